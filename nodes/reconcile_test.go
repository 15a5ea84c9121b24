package nodes_test

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/server/metrics"
)

// An agent's report that is exactly its node's live work is reconciled
// by the digests (reconciles_total{result="same"}), its items still
// assigned turning active; a report that differs (a stray item, an active
// item missing) is compared item by item and asks for the whole set
// again. The digest follows every change to the node's work. Not parallel:
// the counters are process-wide.
func TestReconcileOfAMatchingReportComparesDigests(t *testing.T) {
	e := setup(t)
	e.node("m1", nodes.KindMedia, 100, 1)
	node := e.nodeID("m1")
	var running []agentproto.Running
	var ps []nodes.Placement
	for i := range 4 {
		p := e.place(nodes.WorkCall, fmt.Sprintf("r%d", i), 1)
		ps = append(ps, p)
		running = append(running, agentproto.Running{ID: p.ID, Epoch: p.Epoch})
	}
	if err := e.svc.Ack(e.ctx, node, agentproto.Ack{ID: ps[0].ID, Epoch: ps[0].Epoch, State: nodes.WorkActive}); err != nil {
		t.Fatal(err)
	}
	counts := func() (same, compared float64) {
		return testutil.ToFloat64(metrics.Reconciles.WithLabelValues("same")), testutil.ToFloat64(metrics.Reconciles.WithLabelValues("compared"))
	}
	reconcile := func(report []agentproto.Running, wantChanged bool, wantSame, wantCompared float64, what string) {
		t.Helper()
		same0, compared0 := counts()
		changed, err := e.svc.Reconcile(e.ctx, node, report)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		same, compared := counts()
		if changed != wantChanged || same-same0 != wantSame || compared-compared0 != wantCompared {
			t.Fatalf("%s: changed=%v, %v by digest and %v compared; want changed=%v, %v and %v",
				what, changed, same-same0, compared-compared0, wantChanged, wantSame, wantCompared)
		}
	}
	reversed := []agentproto.Running{running[3], running[2], running[1], running[0]}
	reconcile(reversed, true, 1, 0, "the agent runs the node's work, three items still assigned")
	if n := e.count("SELECT count(*) FROM work WHERE state = 'active'"); n != 4 {
		t.Fatalf("%d items active after reconciling a report of all four, want 4", n)
	}
	reconcile(running, false, 1, 0, "the same report again")

	version := e.count("SELECT assign_version FROM nodes WHERE id = $1", node)
	stray := append(append([]agentproto.Running{}, running...), agentproto.Running{ID: 1 << 40, Epoch: 1})
	reconcile(stray, true, 0, 1, "a stray item")
	reconcile(running[1:], true, 0, 1, "an active item missing")
	if v := e.count("SELECT assign_version FROM nodes WHERE id = $1", node); v == version {
		t.Fatal("a report that differs did not ask the agent for its set again (the version did not move)")
	}

	// The digest follows ends, moves and new placements.
	if _, err := e.svc.EndWork(e.ctx, actor, "r1"); err != nil {
		t.Fatal(err)
	}
	e.node("m2", nodes.KindMedia, 100, 1)
	q := e.place(nodes.WorkCall, "r4", 1)
	e.digestsHold("after an end and a placement")
	var now []agentproto.Running
	for _, x := range []nodes.Placement{ps[0], ps[2], ps[3], q} {
		if x.NodeID == node {
			now = append(now, agentproto.Running{ID: x.ID, Epoch: x.Epoch})
		}
	}
	reconcile(now, q.NodeID == node, 1, 0, "the report after an end and a placement")
}

// On a busy node a report often lags the deliveries still on their way:
// when the report with this instance's latest placements on the node
// added is the node's work, it matches (reconciles_total{result="behind"})
// without reading the node's live work, the items it shows turn active
// and the ones on their way stay assigned. A report that shows a later
// placement but not an earlier one is compared item by item. Not
// parallel: the counters are process-wide.
func TestReconcileOfAReportBehindItsDeliveriesMatches(t *testing.T) {
	e := setup(t)
	e.node("m1", nodes.KindMedia, 100, 1)
	node := e.nodeID("m1")
	var ps []nodes.Placement
	for i := range 4 {
		ps = append(ps, e.place(nodes.WorkCall, fmt.Sprintf("b%d", i), 1))
	}
	runs := func(idx ...int) []agentproto.Running {
		var out []agentproto.Running
		for _, i := range idx {
			out = append(out, agentproto.Running{ID: ps[i].ID, Epoch: ps[i].Epoch})
		}
		return out
	}
	counts := func() [3]float64 {
		return [3]float64{testutil.ToFloat64(metrics.Reconciles.WithLabelValues("same")),
			testutil.ToFloat64(metrics.Reconciles.WithLabelValues("behind")),
			testutil.ToFloat64(metrics.Reconciles.WithLabelValues("compared"))}
	}
	state := func(i int) string {
		t.Helper()
		var s string
		if err := e.pool.QueryRow(e.ctx, "SELECT state FROM work WHERE id = $1", ps[i].ID).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	reconcile := func(report []agentproto.Running, wantChanged bool, want [3]float64, what string) {
		t.Helper()
		before := counts()
		changed, err := e.svc.Reconcile(e.ctx, node, report)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after := counts()
		got := [3]float64{after[0] - before[0], after[1] - before[1], after[2] - before[2]}
		if changed != wantChanged || got != want {
			t.Fatalf("%s: changed=%v, same/behind/compared %v; want changed=%v, %v", what, changed, got, wantChanged, want)
		}
	}
	reconcile(runs(0, 1), true, [3]float64{0, 1, 0}, "a report without the last two placements")
	for i, want := range []string{nodes.WorkActive, nodes.WorkActive, nodes.WorkAssigned, nodes.WorkAssigned} {
		if got := state(i); got != want {
			t.Fatalf("item %d is %s after a report of items 0 and 1, want %s", i, got, want)
		}
	}
	reconcile(runs(0), false, [3]float64{0, 1, 0}, "a report without the last three")
	reconcile(runs(0, 1, 3), true, [3]float64{0, 0, 1}, "a report that shows the last placement but not the one before")
	if got := state(3); got != nodes.WorkActive {
		t.Fatalf("item 3 is %s after a report that shows it, want active", got)
	}
	reconcile(runs(0, 1, 2, 3), true, [3]float64{1, 0, 0}, "the whole set")
	if got := state(2); got != nodes.WorkActive {
		t.Fatalf("item 2 is %s after a report of the whole set, want active", got)
	}
}

// Several nodes' reports are reconciled together, each as it would be
// alone: one that is its node's work activates its items still assigned,
// one with a stray item asks its node's agent for the whole set again, a
// node reported twice is reconciled with its last report, and a node with
// no report is left alone. Not parallel: the counters are process-wide.
func TestReconcileReportsOfSeveralNodes(t *testing.T) {
	e := setup(t)
	names := []string{"m1", "m2", "m3", "m4"}
	for _, n := range names {
		e.node(n, nodes.KindMedia, 100, 1)
	}
	running := map[int64][]agentproto.Running{}
	for i := range 12 {
		p := e.place(nodes.WorkCall, fmt.Sprintf("s%d", i), 1)
		running[p.NodeID] = append(running[p.NodeID], agentproto.Running{ID: p.ID, Epoch: p.Epoch})
	}
	m1, m2, m3, m4 := e.nodeID("m1"), e.nodeID("m2"), e.nodeID("m3"), e.nodeID("m4")
	if len(running[m1]) == 0 || len(running[m2]) == 0 || len(running[m3]) == 0 || len(running[m4]) == 0 {
		t.Fatalf("placements did not reach every node: %v", running)
	}
	version := func(id int64) int { return e.count("SELECT assign_version FROM nodes WHERE id = $1", id) }
	live := func(id int64, state string) int {
		return e.count("SELECT count(*) FROM work WHERE node_id = $1 AND state = $2", id, state)
	}
	v2, v4 := version(m2), version(m4)
	stray := append(append([]agentproto.Running{}, running[m2]...), agentproto.Running{ID: 1 << 40, Epoch: 1})
	same0 := testutil.ToFloat64(metrics.Reconciles.WithLabelValues("same"))
	compared0 := testutil.ToFloat64(metrics.Reconciles.WithLabelValues("compared"))
	res := e.svc.ReconcileReports(e.ctx, []nodes.Report{
		{NodeID: m3, Running: stray}, // replaced by m3's later report
		{NodeID: m1, Running: running[m1]},
		{NodeID: m2, Running: stray},
		{NodeID: m3, Running: running[m3]},
	})
	want := []bool{true, true, true, true}
	for i, r := range res {
		if r.Err != nil || r.Changed != want[i] {
			t.Fatalf("report %d: changed=%v err=%v; want changed=%v: %+v", i, r.Changed, r.Err, want[i], res)
		}
	}
	if same := testutil.ToFloat64(metrics.Reconciles.WithLabelValues("same")) - same0; same != 2 {
		t.Fatalf("%v reports matched by digest, want 2 (m1, m3's last)", same)
	}
	if compared := testutil.ToFloat64(metrics.Reconciles.WithLabelValues("compared")) - compared0; compared != 1 {
		t.Fatalf("%v reports compared item by item, want 1 (m2)", compared)
	}
	for _, id := range []int64{m1, m3} {
		if n := live(id, nodes.WorkAssigned); n != 0 {
			t.Fatalf("node %d: %d items still assigned after a report of its whole work", id, n)
		}
	}
	if version(m2) <= v2 {
		t.Fatal("a report with a stray item did not ask its agent for the whole set again")
	}
	if version(m4) != v4 || live(m4, nodes.WorkAssigned) != len(running[m4]) {
		t.Fatal("a node without a report was changed")
	}
}
