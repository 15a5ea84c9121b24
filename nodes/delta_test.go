package nodes_test

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// follower is an agent's view of one node's desired set, kept by deltas.
type follower struct {
	node  int64
	since int64
	held  map[int64]agentproto.Assignment
	// deltas and wholes count the answers of each kind.
	deltas, wholes int
}

func (f *follower) poll(e *env) agentproto.DesiredSet {
	e.t.Helper()
	ds, err := e.svc.DesiredSince(e.ctx, f.node, f.since)
	if err != nil {
		e.t.Fatalf("delta of node %d since %d: %v", f.node, f.since, err)
	}
	if ds.Delta {
		f.deltas++
	} else {
		f.wholes++
	}
	f.since, f.held = ds.Version, ds.Apply(f.held)
	return ds
}

// matches fails the test unless what the follower holds is the node's
// whole desired set: the same items at the same epochs.
func (f *follower) matches(e *env, when string) {
	e.t.Helper()
	whole, err := e.svc.Desired(e.ctx, f.node)
	if err != nil {
		e.t.Fatal(err)
	}
	want := map[int64]string{}
	for _, a := range whole.Assignments {
		want[a.ID] = fmt.Sprintf("%s@%d", a.Ref, a.Epoch)
	}
	got := map[int64]string{}
	for id, a := range f.held {
		got[id] = fmt.Sprintf("%s@%d", a.Ref, a.Epoch)
	}
	if !maps.Equal(got, want) {
		var extra, missing []string
		for id, x := range got {
			if want[id] != x {
				extra = append(extra, x)
			}
		}
		for id, x := range want {
			if got[id] != x {
				missing = append(missing, x)
			}
		}
		slices.Sort(extra)
		slices.Sort(missing)
		e.t.Fatalf("%s: node %d holds by deltas %d items, its whole set has %d: extra %v, missing %v", when, f.node, len(got), len(want), extra, missing)
	}
	if f.since != whole.Version {
		e.t.Fatalf("%s: node %d: follower at version %d, node at %d", when, f.node, f.since, whole.Version)
	}
	e.digestsHold(when)
}

// digestsHold fails the test unless every node's live_digest is the
// digest of its live work, as reconciliation relies on (migration 00020).
func (e *env) digestsHold(when string) {
	e.t.Helper()
	if n := e.count(`SELECT count(*) FROM nodes n WHERE n.live_digest <> coalesce((SELECT bit_xor(work_digest(w.id, w.epoch))
		FROM work w WHERE w.node_id = n.id AND w.state IN ('assigned', 'active')), 0)`); n != 0 {
		e.t.Fatalf("%s: %d nodes' live_digest is not the digest of their live work", when, n)
	}
}

func (e *env) nodeID(name string) int64 {
	e.t.Helper()
	return int64(e.count("SELECT id FROM nodes WHERE name = $1", name))
}

// An agent that takes deltas holds exactly the whole desired set after
// every kind of change: placements, ends, its own acks (which are no
// delivery), a failed start and disabling the node (work leaves the node: the node's
// next answer is the whole set), and a reconciliation that finds the agent
// running something else (the whole set again).
func TestDeltaDeliveriesMatchTheWholeSet(t *testing.T) {
	t.Parallel()
	e := setup(t)
	names := []string{"m1", "m2", "m3"}
	fs := map[string]*follower{}
	for _, n := range names {
		e.node(n, nodes.KindMedia, 1000, 100)
		fs[n] = &follower{node: e.nodeID(n)}
	}
	sync := func(when string) {
		t.Helper()
		for _, n := range names {
			fs[n].poll(e)
			fs[n].matches(e, when)
		}
	}
	sync("at the start")
	for _, f := range fs {
		if f.wholes != 1 || f.deltas != 0 {
			t.Fatalf("the first answer (since 0) must be the whole set: %d whole, %d deltas", f.wholes, f.deltas)
		}
	}

	items := make([]nodes.WorkInput, 30)
	for i := range items {
		items[i] = nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("c%d", i), Cost: 1}
	}
	ps, err := e.svc.PlaceWorkBatch(e.ctx, actor, items)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		ds := fs[n].poll(e)
		if !ds.Delta || len(ds.Assignments) == 0 || len(ds.Assignments) == 30 {
			t.Fatalf("after a batch over three nodes, %s's answer should be a delta of its share: delta=%v, %d items", n, ds.Delta, len(ds.Assignments))
		}
		fs[n].matches(e, "after the batch")
	}

	for i := range 5 {
		if _, err := e.svc.EndWork(e.ctx, actor, fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	sync("after five ends")

	// The agent's own ack is no delivery: no new version, nothing to send.
	p := ps[10]
	var node string
	for n, f := range fs {
		if f.node == p.NodeID {
			node = n
		}
	}
	before := fs[node].since
	if err := e.svc.Ack(e.ctx, p.NodeID, agentproto.Ack{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive}); err != nil {
		t.Fatal(err)
	}
	if ds := fs[node].poll(e); ds.Version != before || len(ds.Assignments)+len(ds.Removed) != 0 {
		t.Fatalf("an active ack moved the version %d -> %d or was delivered (%d items, %d removed)", before, ds.Version, len(ds.Assignments), len(ds.Removed))
	}

	// A failed start: the item leaves the node, which then gets its whole
	// set; the node the item goes to gets it as a delta.
	wholes := fs[node].wholes
	q := ps[11]
	if q.NodeID != p.NodeID {
		q = ps[12]
	}
	for _, x := range ps {
		if x.NodeID == p.NodeID && x.ID != p.ID && x.Ref >= "c5" {
			q = x
		}
	}
	if err := e.svc.Ack(e.ctx, q.NodeID, agentproto.Ack{ID: q.ID, Epoch: q.Epoch, State: "failed", Error: "no codec"}); err != nil {
		t.Fatal(err)
	}
	sync("after a failed start")
	if fs[node].wholes != wholes+1 {
		t.Fatalf("work left %s (failed start) but its answer was a delta", node)
	}
	if _, ok := fs[node].held[q.ID]; ok {
		t.Fatalf("%s still holds the item whose start failed", node)
	}

	// Disabling moves the node's work away.
	if _, _, err := e.svc.SetAdminState(e.ctx, actor, node, nodes.StateDisabled); err != nil {
		t.Fatal(err)
	}
	sync("after disabling")
	if len(fs[node].held) != 0 {
		t.Fatalf("the disabled node still holds %d items", len(fs[node].held))
	}
	if _, _, err := e.svc.SetAdminState(e.ctx, actor, node, nodes.StateEnabled); err != nil {
		t.Fatal(err)
	}

	// Reconciliation: the agent of another node reports running an item it
	// does not have; its next answer is the whole set.
	other := names[0]
	if other == node {
		other = names[1]
	}
	wholes = fs[other].wholes
	running := []agentproto.Running{{ID: 1 << 40, Epoch: 1}}
	for id, a := range fs[other].held {
		running = append(running, agentproto.Running{ID: id, Epoch: a.Epoch})
	}
	if changed, err := e.svc.Reconcile(e.ctx, fs[other].node, running); err != nil || !changed {
		t.Fatalf("reconcile of a stray item: changed=%v err=%v", changed, err)
	}
	sync("after reconciliation")
	if fs[other].wholes != wholes+1 {
		t.Fatalf("reconciliation asked %s's agent for the whole set, but its answer was a delta", other)
	}
	sync("with nothing changed")

	// A version from another database (higher than the node's): the whole set.
	f := fs[names[2]]
	wholes = f.wholes
	f.since += 1 << 30
	if ds := f.poll(e); ds.Delta || f.wholes != wholes+1 {
		t.Fatal("a version above the node's got a delta")
	}
	f.matches(e, "after a version from elsewhere")
}

// Agents that take deltas while several instances place, end and move work
// at once end up holding exactly the whole set: a change committed while an
// agent reads is never stamped below the version that agent is handed.
func TestDeltaDeliveriesUnderConcurrentChanges(t *testing.T) {
	t.Parallel()
	e := setup(t)
	names := []string{"m1", "m2", "m3", "m4"}
	fs := make([]*follower, len(names))
	for i, n := range names {
		e.node(n, nodes.KindMedia, 10000, 100)
		fs[i] = &follower{node: e.nodeID(n)}
	}
	instances := []*nodes.Service{e.svc, nodes.NewService(e.pool, nil), nodes.NewService(e.pool, nil)}
	var writers, readers sync.WaitGroup
	done := make(chan struct{})
	for k, svc := range instances {
		writers.Go(func() {
			for r := range 15 {
				items := make([]nodes.WorkInput, 8)
				for i := range items {
					items[i] = nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("w%d-%d-%d", k, r, i), Cost: 1}
				}
				if _, err := svc.PlaceWorkBatch(e.ctx, actor, items); err != nil {
					t.Errorf("place: %v", err)
					return
				}
				if _, err := svc.PlaceWork(e.ctx, actor, nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("s%d-%d", k, r), Cost: 1}); err != nil {
					t.Errorf("place: %v", err)
					return
				}
				if _, err := svc.EndWork(e.ctx, actor, fmt.Sprintf("w%d-%d-3", k, r)); err != nil {
					t.Errorf("end: %v", err)
					return
				}
			}
		})
	}
	for _, f := range fs {
		readers.Go(func() {
			for {
				ds, err := e.svc.DesiredSince(e.ctx, f.node, f.since)
				if err != nil {
					t.Errorf("delta: %v", err)
					return
				}
				if ds.Delta {
					f.deltas++
				}
				f.since, f.held = ds.Version, ds.Apply(f.held)
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	writers.Wait()
	close(done)
	readers.Wait()
	if t.Failed() {
		return
	}
	for _, f := range fs {
		f.poll(e)
		f.matches(e, "after concurrent placements and ends")
		if f.deltas == 0 {
			t.Fatalf("node %d: no delta answers during the run", f.node)
		}
	}
}

// A batch placement writes one history row per item, placed or not, as
// the history trigger writes for any other insert: the node's name and,
// for a placed item, the version its node was moved to; an unplaced item
// has neither. One version per placement, and each node's version is it.
// Work inserted by any other statement still gets its row from the
// trigger.
func TestPlacementWritesOneHistoryRowPerItem(t *testing.T) {
	e := setup(t)
	e.node("m1", nodes.KindMedia, 3, 1)
	e.node("m2", nodes.KindMedia, 3, 1)
	items := make([]nodes.WorkInput, 8) // room for six
	for i := range items {
		items[i] = nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("h%d", i), Cost: 1}
	}
	if _, err := e.svc.PlaceWorkBatch(e.ctx, actor, items); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT count(*) FROM work w WHERE ref LIKE 'h%' AND (SELECT count(*) FROM work_history h WHERE h.work_id = w.id) <> 1"); n != 0 {
		t.Fatalf("%d placed items without exactly one history row", n)
	}
	if n := e.count(`SELECT count(*) FROM work w JOIN work_history h ON h.work_id = w.id JOIN nodes n ON n.id = w.node_id
		WHERE w.ref LIKE 'h%' AND h.node_id = n.id AND h.node_name = n.name AND h.version = n.assign_version AND h.state = 'assigned' AND h.epoch = w.epoch`); n != 6 {
		t.Fatalf("%d of 6 placed items have a history row naming their node at its version", n)
	}
	if n := e.count(`SELECT count(*) FROM work w JOIN work_history h ON h.work_id = w.id
		WHERE w.ref LIKE 'h%' AND w.state = 'unplaced' AND h.node_id IS NULL AND h.node_name = '' AND h.version IS NULL`); n != 2 {
		t.Fatalf("%d of 2 unplaced items have a history row without node or version", n)
	}
	if n := e.count("SELECT count(DISTINCT version) FROM work_history h JOIN work w ON w.id = h.work_id WHERE w.ref LIKE 'h%' AND h.version IS NOT NULL"); n != 1 {
		t.Fatalf("one placement stamped %d versions, want 1", n)
	}
	e.exec("INSERT INTO work (ref, kind, cost, state, node_id) VALUES ('raw', 'call', 1, 'unplaced', NULL)")
	if n := e.count("SELECT count(*) FROM work_history h JOIN work w ON w.id = h.work_id WHERE w.ref = 'raw'"); n != 1 {
		t.Fatalf("work inserted outside a placement has %d history rows, want the trigger's 1", n)
	}
}
