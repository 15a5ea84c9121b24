package nodes_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
)

// The leader mirrors maintenance windows into the node rows every second
// while administrators add windows. A window committed between the
// mirror's read of the windows and its read of the nodes must not be
// taken for a cancelled one: each node's maintenance begins once (one
// event) and is still in force at the end.
func TestMaintenanceSyncKeepsWindowsAddedMeanwhile(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const n = 40
	for i := range n {
		e.node(fmt.Sprintf("mw%d", i), nodes.KindMedia, 10, 1)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := e.svc.SyncMaintenance(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("sync: %v", err)
					return
				}
			}
		})
	}
	for i := range n {
		if _, err := e.svc.AddMaintenance(e.ctx, actor, fmt.Sprintf("mw%d", i),
			nodes.MaintenanceInput{End: time.Now().Add(time.Hour), Reason: "firmware"}); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if c := e.count("SELECT count(*) FROM nodes WHERE maintenance_until IS NULL OR maintenance_until <= now()"); c != 0 {
		t.Errorf("%d of %d nodes out of maintenance, want none", c, n)
	}
	if c := e.count("SELECT count(*) FROM events WHERE type = 'maintenance' AND message LIKE '%is in maintenance until%'"); c != n {
		t.Errorf("%d maintenance-began events for %d nodes, want one each (a window taken for cancelled begins again)", c, n)
	}
}

// Adding a window to one node mirrors that node only: another node's
// maintenance in force stays as it was, and a later sync of every node
// finds nothing to change.
func TestMaintenanceOfOneNodeLeavesTheOthers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("ma", nodes.KindMedia, 10, 1)
	e.node("mb", nodes.KindMedia, 10, 1)
	for _, name := range []string{"ma", "mb"} {
		if _, err := e.svc.AddMaintenance(e.ctx, actor, name, nodes.MaintenanceInput{End: time.Now().Add(time.Hour), Reason: "firmware"}); err != nil {
			t.Fatal(err)
		}
	}
	if c := e.count("SELECT count(*) FROM nodes WHERE name = 'ma' AND maintenance_until > now() + interval '50 minutes'"); c != 1 {
		t.Fatalf("ma's maintenance ended when mb's began")
	}
	if err := e.svc.SyncMaintenance(e.ctx); err != nil {
		t.Fatal(err)
	}
	if c := e.count("SELECT count(*) FROM events WHERE type = 'maintenance' AND message LIKE '%is in maintenance until%'"); c != 2 {
		t.Errorf("%d maintenance-began events, want 2", c)
	}
}
