package nodes

import (
	"fmt"
	"testing"

	"github.com/callplane/callplane/nodes/agentproto"
)

func items(ids ...int64) []agentproto.Assignment {
	out := make([]agentproto.Assignment, len(ids))
	for i, id := range ids {
		out[i] = agentproto.Assignment{ID: id, Ref: fmt.Sprint("r", id), Kind: WorkCall, Cost: 1, Epoch: 1, State: WorkAssigned}
	}
	return out
}

// got is what a delta from the kept placements says: its version and the
// ids it carries, or "read the database".
func got(r *recentDeltas, node, since int64, mark uint64) string {
	ds, ok := r.delta(node, since, mark)
	if !ok {
		return "database"
	}
	var ids []int64
	for _, a := range ds.Assignments {
		ids = append(ids, a.ID)
	}
	return fmt.Sprintf("v%d %v", ds.Version, ids)
}

// A stream answers from what its instance placed only when that is the
// whole of the node's change since the agent's version: the placements
// chain from it and reach every version notified, and nothing changed at a
// version not known here since the stream last read the database.
func TestRecentDeltasAnswerOnlyWhatTheyHoldWhole(t *testing.T) {
	var r recentDeltas
	const n = 7
	mark := r.mark(n) // the stream's first read of the database: at v10
	if g := got(&r, n, 10, mark); g != "database" {
		t.Fatalf("nothing kept or notified for the node: %s, want the database", g)
	}
	r.placed(n, 10, 20, items(1, 2))
	r.notified([]int64{n, 8}, 20)
	if g := got(&r, n, 10, mark); g != "v20 [1 2]" {
		t.Fatalf("one placement since v10: %s", g)
	}
	r.placed(n, 20, 30, items(3))
	if g := got(&r, n, 10, mark); g != "v30 [1 2 3]" {
		t.Fatalf("two placements since v10, the second not yet notified: %s", g)
	}
	r.notified([]int64{n}, 30)
	if g := got(&r, n, 20, mark); g != "v30 [3]" {
		t.Fatalf("since v20: %s", g)
	}
	if g := got(&r, n, 30, mark); g != "v30 []" {
		t.Fatalf("a wake with nothing new: %s, want an empty delta at v30", g)
	}
	if g := got(&r, n, 0, mark); g != "database" {
		t.Fatalf("an agent with nothing (since 0) takes the whole set: %s", g)
	}

	// Another call manager placed on the node (a version notified that the
	// kept placements do not reach): the database, for every version below.
	r.notified([]int64{n}, 35)
	if g := got(&r, n, 30, mark); g != "database" {
		t.Fatalf("v35 placed elsewhere: %s, want the database", g)
	}
	// The stream read it there; then this instance placed after it.
	r.placed(n, 35, 40, items(4))
	r.notified([]int64{n}, 40)
	if g := got(&r, n, 35, mark); g != "v40 [4]" {
		t.Fatalf("since v35: %s", g)
	}
	if g := got(&r, n, 20, mark); g != "database" {
		t.Fatalf("since v20, with v35 placed elsewhere between: %s, want the database", g)
	}

	// A change notified without a version (an end, a move, a resync):
	// the database until the stream's next read there.
	r.notified([]int64{n}, 0)
	if g := got(&r, n, 40, mark); g != "database" {
		t.Fatalf("after a change at a version not known: %s, want the database", g)
	}
	mark = r.mark(n)
	if g := got(&r, n, 40, mark); g != "v40 []" {
		t.Fatalf("after reading the database again: %s", g)
	}
	// Another node's changes are no concern of this one.
	r.notified([]int64{8}, 0)
	if g := got(&r, n, 40, mark); g != "v40 []" {
		t.Fatalf("after another node changed: %s", g)
	}
	// Every node ("*", or a listener that reconnected).
	r.notified(nil, 0)
	if g := got(&r, n, 40, mark); g != "database" {
		t.Fatalf("after a change to every node: %s, want the database", g)
	}

	// Only the last recentSegments placements are kept.
	mark = r.mark(n)
	v := int64(40)
	for i := range recentSegments + 1 {
		r.placed(n, v, v+1, items(int64(100+i)))
		v++
	}
	r.notified([]int64{n}, v)
	if g := got(&r, n, 40, mark); g != "database" {
		t.Fatalf("a stream %d placements behind: %s, want the database", recentSegments+1, g)
	}
	if g := got(&r, n, v-1, mark); g != fmt.Sprintf("v%d [%d]", v, 100+recentSegments) {
		t.Fatalf("one placement behind: %s", g)
	}
}

// A placement's notification names its version after the ids; a listener
// that knows only ids skips it.
func TestAssignPayloadCarriesThePlacementsVersion(t *testing.T) {
	for payload, want := range map[string]string{
		"1,2,@35": "[1 2] 35",
		"4":       "[4] 0",
		"*":       "[] 0",
		"":        "[] 0",
	} {
		ids, v := parseAssignPayload(payload)
		if g := fmt.Sprint(ids, " ", v); g != want {
			t.Errorf("%q: %s, want %s", payload, g, want)
		}
	}
	if ids := ParseNodeIDs("*"); ids != nil {
		t.Errorf("* wakes every node: got %v, want nil", ids)
	}
}

// Placements kept out of order (two groups committing close together)
// still chain in version order, and a lagging report's candidates are the
// newest placements first, each with the items it adds.
func TestRecentDeltasKeepVersionOrderAndListTheUnapplied(t *testing.T) {
	var r recentDeltas
	const n = 3
	mark := r.mark(n)
	r.placed(n, 20, 30, items(3))
	r.placed(n, 10, 20, items(1, 2))
	r.notified([]int64{n}, 30)
	if g := got(&r, n, 10, mark); g != "v30 [1 2 3]" {
		t.Fatalf("two placements kept out of order: %s, want v30 [1 2 3]", g)
	}
	lags := r.unapplied(n)
	if len(lags) != 2 || fmt.Sprint(lags[0].ids) != "[3]" || fmt.Sprint(lags[1].ids) != "[3 1 2]" {
		t.Fatalf("unapplied: %+v, want [3] then [3 1 2]", lags)
	}
	if want := workDigest(3, 1); lags[0].digest != want {
		t.Fatalf("the newest placement's digest is %x, want %x", lags[0].digest, want)
	}
	if want := workDigest(1, 1) ^ workDigest(2, 1) ^ workDigest(3, 1); lags[1].digest != want {
		t.Fatalf("the last two placements' digest is %x, want %x", lags[1].digest, want)
	}
	if r.unapplied(n+1) != nil {
		t.Fatal("a node with nothing kept has unapplied placements")
	}
}
