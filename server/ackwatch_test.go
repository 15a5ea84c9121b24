package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
)

// An assignment its node never acknowledges is placed again on another
// node after the bound, with an event saying why and the counter raised;
// acknowledged work and fresh assignments stay.
func TestUnackedAssignmentsReplaced(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	exec(t, in, "UPDATE nodes SET admin_state = 'draining' WHERE name = 'm2'")
	stale := place(t, in, "call", "stale", 1)
	acked := place(t, in, "call", "acked", 1)
	fresh := place(t, in, "call", "fresh", 1)
	if stale.Node != "m1" || acked.Node != "m1" || fresh.Node != "m1" {
		t.Fatalf("placed on %s %s %s, want m1", stale.Node, acked.Node, fresh.Node)
	}
	exec(t, in, "UPDATE nodes SET admin_state = 'enabled' WHERE name = 'm2'")
	exec(t, in, "UPDATE work SET state = 'active' WHERE ref = 'acked'")
	exec(t, in, "UPDATE work SET updated_at = now() - interval '1 minute' WHERE ref IN ('stale', 'acked')")
	before := nodes.UnackedReplaced()
	n, err := in.Nodes().ReplaceUnacked(context.Background(), 30*time.Second)
	if err != nil || n != 1 {
		t.Fatalf("re-placed %d (%v), want 1", n, err)
	}
	if got := nodes.UnackedReplaced() - before; got < 1 {
		t.Errorf("counter rose by %d", got)
	}
	where := func(ref string) string {
		var s string
		if err := in.Pool().QueryRow(context.Background(), "SELECT n.name || '/' || w.state || '/' || w.epoch FROM work w JOIN nodes n ON n.id = w.node_id WHERE w.ref = $1", ref).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := where("stale"); got != "m2/assigned/2" {
		t.Errorf("stale work: %s, want m2/assigned/2", got)
	}
	if got := where("acked"); got != "m1/active/1" {
		t.Errorf("acknowledged work: %s", got)
	}
	if got := where("fresh"); got != "m1/assigned/1" {
		t.Errorf("fresh assignment: %s", got)
	}
	if c := count(t, in, "SELECT count(*) FROM events WHERE message LIKE '%not acknowledged%'"); c != 1 {
		t.Errorf("%d events naming the cause", c)
	}
}
