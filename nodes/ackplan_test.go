package nodes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// planLog collects the plans Postgres's auto_explain sends to the client:
// the plan of every statement, nested ones (the history trigger's) too,
// with the rows each step examined and threw away.
type planLog struct {
	mu    sync.Mutex
	plans []string
}

func (l *planLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.plans
	l.plans = nil
	return p
}

// examined counts the rows a plan read: every row a scan produced or
// filtered out, and every pair a join's filter threw away, on all loops.
func examined(n map[string]any) float64 {
	num := func(k string) float64 { f, _ := n[k].(float64); return f }
	loops := max(num("Actual Loops"), 1)
	total := (num("Rows Removed by Filter") + num("Rows Removed by Join Filter")) * loops
	if strings.HasSuffix(n["Node Type"].(string), "Scan") {
		total += num("Actual Rows") * loops
	}
	children, _ := n["Plans"].([]any)
	for _, c := range children {
		total += examined(c.(map[string]any))
	}
	return total
}

// explainEnv is a test env on one connection that sends the plan of
// every statement it runs, nested ones included, to log.
func explainEnv(t *testing.T) (*env, *planLog) {
	t.Helper()
	log := &planLog{}
	cfg, err := pgxpool.ParseConfig(dbtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if _, plan, ok := strings.Cut(n.Message, "plan:\n"); ok {
			log.mu.Lock()
			log.plans = append(log.plans, plan)
			log.mu.Unlock()
		}
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		for _, s := range []string{`LOAD 'auto_explain'`, `SET auto_explain.log_min_duration = 0`,
			`SET auto_explain.log_analyze = on`, `SET auto_explain.log_format = json`, `SET auto_explain.log_nested_statements = on`,
			`SET client_min_messages = log`} {
			if _, err := c.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &env{t: t, ctx: context.Background(), pool: pool, svc: nodes.NewService(pool, nil), port: 5060}, log
}

// rowsRead sums the rows every plan read and returns the plan that read
// the most.
func rowsRead(t *testing.T, plans []string) (total float64, worst string, worstN float64) {
	t.Helper()
	if len(plans) == 0 {
		t.Fatal("auto_explain sent no plans")
	}
	for _, p := range plans {
		var doc struct {
			Plan map[string]any `json:"Plan"`
		}
		if err := json.Unmarshal([]byte(p), &doc); err != nil {
			t.Fatalf("plan: %v\n%s", err, p)
		}
		n := examined(doc.Plan)
		total += n
		if n > worstN {
			worst, worstN = p, n
		}
	}
	return total, worst, worstN
}

// An ack of many items reads each item's row a few times, not once per
// other item. In a session whose first change of work was one row, the
// history trigger kept a nested loop over its transition tables and
// compared every old row with every new one (quadratic: 15.7 million
// pairs for an ack of 3,962 items, 1.4 s). The test runs on one
// connection, so that a small ack comes first in the session the big ones
// use, and counts the rows every plan read (auto_explain, nested
// statements included). It also bounds how the acks find their rows: in
// the bench, before the work table had statistics, Postgres found each
// item through its node's live work (hundreds of rows per item); that
// plan does not come up on this small table, but would fail the bound.
func TestAcksOfManyItemsExamineEachRowOnce(t *testing.T) {
	const nodesN, perNode = 4, 500
	e, log := explainEnv(t)
	var ids []int64
	for i := range nodesN {
		name := "media-" + strconv.Itoa(i+1)
		e.node(name, nodes.KindMedia, 100_000, 1)
		ids = append(ids, e.nodeID(name))
	}

	// One item placed and acked first: the session's first change of work
	// is a single row.
	first := e.place("call", "first", 1)
	if res, err := e.svc.AckBatch(e.ctx, first.NodeID, []agentproto.Ack{{ID: first.ID, Epoch: first.Epoch, State: nodes.WorkActive}}); err != nil || res[0].Err != nil {
		t.Fatalf("ack of the first item: %v %v", err, res)
	}

	var items []nodes.WorkInput
	for i := range nodesN * perNode {
		items = append(items, nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("call-%d", i), Cost: 1})
	}
	acks := map[int64][]agentproto.Ack{}
	for batch := range slices.Chunk(items, 1000) {
		placed, err := e.svc.PlaceWorkBatch(e.ctx, actor, batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range placed {
			acks[p.NodeID] = append(acks[p.NodeID], agentproto.Ack{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive})
		}
	}
	log.take()
	for _, id := range ids {
		if len(acks[id]) < perNode/2 {
			t.Fatalf("node %d got %d of %d items: the placement did not spread them", id, len(acks[id]), len(items))
		}
		res, err := e.svc.AckBatch(e.ctx, id, acks[id])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("ack of %d on node %d: %v", r.ID, id, r.Err)
			}
		}
	}
	// Each item's row is read a few times: by the update (by key, or in a
	// hash join over the live work, which on a table this small and without
	// statistics is a fair choice for acks of 500), by the trigger pairing
	// the statement's old and new rows, by the history insert. A plan that
	// reads a node's live work per item, or pairs every old row with every
	// new one, reads hundreds per item.
	e.checkRowsRead(log.take(), len(items)+1, len(items), fmt.Sprintf("the acks of %d items", len(items)))
}

// A heartbeat reporting a node's running work activates the items whose
// ack was lost, each found by key. Found through the node's live work,
// every reported item was compared with every row of the node: a
// heartbeat reporting 10,000 items took 11 s, long enough for the node to
// look lost.
func TestReconcileOfManyItemsExamineEachRowOnce(t *testing.T) {
	e, log := explainEnv(t)
	e.node("media-1", nodes.KindMedia, 100_000, 1)
	node := e.nodeID("media-1")
	var running []agentproto.Running
	for _, p := range e.placeCalls("lost", 2) {
		running = append(running, agentproto.Running{ID: p.ID, Epoch: p.Epoch})
	}
	log.take()
	if _, err := e.svc.Reconcile(e.ctx, node, running); err != nil {
		t.Fatal(err)
	}
	e.checkRowsRead(log.take(), len(running), len(running), fmt.Sprintf("reconciling %d items", len(running)))
}

// Acks arrive a few at a time from many agents (on their heartbeats) while
// the work table holds many live items, though the plan of the ack
// statement may have been made when it was small (a new cluster's first
// minutes, a burst of placements: Postgres keeps a generic plan of a
// prepared statement). Each small group of acks must find its rows by
// key: a plan that scans the live work reads the whole table every time.
func TestSmallAckGroupsOnABigTableReadByKey(t *testing.T) {
	e, log := explainEnv(t)
	const nodesN = 4
	var ids []int64
	for i := range nodesN {
		name := "media-" + strconv.Itoa(i+1)
		e.node(name, nodes.KindMedia, 100_000, 1)
		ids = append(ids, e.nodeID(name))
	}
	// Acks while the table is small: Postgres may keep a generic plan of
	// the prepared ack statement made for this size.
	for i := range 10 {
		p := e.place("call", fmt.Sprintf("small-%d", i), 1)
		if res, err := e.svc.AckBatch(e.ctx, p.NodeID, []agentproto.Ack{{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive}}); err != nil || res[0].Err != nil {
			t.Fatalf("ack of small-%d: %v %v", i, err, res)
		}
	}
	acks := map[int64][]agentproto.Ack{}
	for _, p := range e.placeCalls("big", 10) {
		acks[p.NodeID] = append(acks[p.NodeID], agentproto.Ack{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive})
	}
	log.take()
	const groups, per = 20, 5
	acked := 0
	for g := range groups {
		node := ids[g%nodesN]
		group := acks[node][:per]
		acks[node] = acks[node][per:]
		res, err := e.svc.AckBatch(e.ctx, node, group)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("ack of %d: %v", r.ID, r.Err)
			}
		}
		acked += len(group)
	}
	// By key, each acked row is read a few times (see above); a scan of the
	// live work reads 10,000 rows per group.
	e.checkRowsRead(log.take(), acked+10, acked, fmt.Sprintf("%d groups of %d acks", groups, per))
}

// placeCalls places batches of 1,000 calls of cost 1, named prefix-b-i.
func (e *env) placeCalls(prefix string, batches int) []nodes.Placement {
	e.t.Helper()
	var out []nodes.Placement
	for b := range batches {
		items := make([]nodes.WorkInput, 1000)
		for i := range items {
			items[i] = nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("%s-%d-%d", prefix, b, i), Cost: 1}
		}
		placed, err := e.svc.PlaceWorkBatch(e.ctx, actor, items)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, placed...)
	}
	return out
}

// checkRowsRead checks that active work items are active after what (the
// operation, for messages), and that its plans read at most 20 rows for
// each of its items.
func (e *env) checkRowsRead(plans []string, active, items int, what string) {
	e.t.Helper()
	if n := e.count("SELECT count(*) FROM work WHERE state = 'active'"); n != active {
		e.t.Fatalf("%d items active after %s, want %d", n, what, active)
	}
	total, worst, worstN := rowsRead(e.t, plans)
	if limit := 20 * float64(items); total > limit {
		e.t.Fatalf("%s read %.0f rows (limit %.0f); the worst plan (%.0f rows):\n%s", what, total, limit, worstN, worst)
	}
	e.t.Logf("%s read %.0f rows in %d statements", what, total, len(plans))
}
