package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/server/servertest"
)

func batchOf(prefix string, n, cost int) []nodes.WorkInput {
	out := make([]nodes.WorkInput, n)
	for i := range out {
		out[i] = nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("%s-%d", prefix, i), Cost: cost}
	}
	return out
}

// countersMatchRows fails unless every node's used counter is the cost of
// its live work and no node is above its capacity.
func countersMatchRows(t *testing.T, in *servertest.Instance) {
	t.Helper()
	if n := count(t, in, `SELECT count(*) FROM nodes n WHERE used <> coalesce((SELECT sum(cost) FROM work w
		WHERE w.node_id = n.id AND w.state IN ('assigned', 'active')), 0)`); n != 0 {
		t.Fatalf("%d nodes' used counters disagree with their work rows", n)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE used > capacity"); n != 0 {
		t.Fatalf("%d nodes above capacity", n)
	}
}

func TestBatchPlacementSpreadsEvenly(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1", "m2", "m3")
	tok := in.APIToken(t)
	items := batchOf("b", 300, 1)
	r, m := api(t, in, "POST", "/api/v1/work", tok, items)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("batch: %d %s", r.StatusCode, r.Body)
	}
	ps := m["placements"].([]any)
	if len(ps) != 300 {
		t.Fatalf("%d placements for 300 items", len(ps))
	}
	for i, p := range ps {
		p := p.(map[string]any)
		if p["ref"] != items[i].Ref || p["state"] != "assigned" || p["node"] == "" || p["id"].(float64) <= 0 {
			t.Fatalf("placement %d: %v", i, p)
		}
	}
	if u := usedBy(t, in); u["m1"] != 100 || u["m2"] != 100 || u["m3"] != 100 {
		t.Fatalf("spread: %v", u)
	}
	countersMatchRows(t, in)
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'assigned' AND epoch = 1"); n != 300 {
		t.Fatalf("assigned rows: %d", n)
	}
	// The single-object form is unchanged: the cluster is full, so 202.
	r, m = api(t, in, "POST", "/api/v1/work", tok, map[string]any{"kind": "call", "ref": "one-more", "cost": 1})
	if r.StatusCode != http.StatusAccepted || m["state"] != "unplaced" {
		t.Fatalf("single placement on a full cluster: %d %s", r.StatusCode, r.Body)
	}
	// A smaller batch on fresh nodes spreads evenly too.
	exec(t, in, "UPDATE nodes SET admin_state = 'draining'")
	for i, n := range []string{"m4", "m5", "m6"} {
		in.AddNode(t, n, "media", fmt.Sprintf("127.0.0.1:%d", 5070+i), 100)
	}
	exec(t, in, "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())")
	if r, _ := api(t, in, "POST", "/api/v1/work", tok, batchOf("s", 30, 1)); r.StatusCode != http.StatusCreated {
		t.Fatalf("small batch: %d %s", r.StatusCode, r.Body)
	}
	if u := usedBy(t, in); u["m4"] != 10 || u["m5"] != 10 || u["m6"] != 10 {
		t.Fatalf("small batch spread: %v", u)
	}
}

func TestBatchPlacementBeyondCapacity(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	tok := in.APIToken(t)
	r, m := api(t, in, "POST", "/api/v1/work", tok, batchOf("over", 50, 1))
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("batch: %d %s", r.StatusCode, r.Body)
	}
	states := map[string]int{}
	for _, p := range m["placements"].([]any) {
		p := p.(map[string]any)
		states[fmt.Sprint(p["state"])]++
		if p["state"] == "unplaced" && p["node"] != nil {
			t.Fatalf("unplaced item with a node: %v", p)
		}
	}
	if states["assigned"] != 20 || states["unplaced"] != 30 {
		t.Fatalf("states: %v", states)
	}
	if u := usedBy(t, in); u["m1"] != 10 || u["m2"] != 10 {
		t.Fatalf("placed: %v", u)
	}
	countersMatchRows(t, in)
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'unplaced' AND message LIKE '%30 calls%'"); n != 1 {
		t.Fatalf("unplaced events naming the 30 calls: %d", n)
	}
	// A second batch that fits nowhere raises no second alert.
	if r, _ := api(t, in, "POST", "/api/v1/work", tok, batchOf("more", 5, 1)); r.StatusCode != http.StatusCreated {
		t.Fatalf("second batch: %d", r.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM alerts WHERE type = 'capacity'"); n != 1 {
		t.Fatalf("capacity alerts: %d", n)
	}
	// The waiting work is placed when capacity returns.
	exec(t, in, "UPDATE nodes SET capacity = 100")
	in.Nodes().PlaceAllUnplaced(context.Background(), "test")
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'unplaced'"); n != 0 {
		t.Fatalf("still unplaced: %d", n)
	}
	countersMatchRows(t, in)
}

func TestBatchPlacementMixedCostsAndKinds(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	in.AddNode(t, "q1", "queue", "127.0.0.1:5080", 5)
	exec(t, in, "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())")
	items := []nodes.WorkInput{
		{Kind: "call", Ref: "c1", Cost: 1}, {Kind: "queue", Ref: "q-a", Cost: 3},
		{Kind: "call", Ref: "c2", Cost: 1}, {Kind: "call", Ref: "big", Cost: 9},
		{Kind: "queue", Ref: "q-b", Cost: 3}, {Kind: "call", Ref: "c3", Cost: 8},
	}
	ps, err := in.Nodes().PlaceWorkBatch(context.Background(), testActor, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if p.Ref != items[i].Ref {
			t.Fatalf("placement %d is %s, want %s", i, p.Ref, items[i].Ref)
		}
	}
	// The big call items fit because they are spread first.
	for _, p := range ps {
		if p.Kind == "call" && p.State != "assigned" {
			t.Fatalf("call %s: %s", p.Ref, p.State)
		}
	}
	if ps[1].Node != "q1" || ps[4].State != "unplaced" {
		t.Fatalf("queue items: %+v, %+v", ps[1], ps[4])
	}
	countersMatchRows(t, in)
}

func TestBatchPlacementInvalidItemWritesNothing(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	tok := in.APIToken(t)
	items := batchOf("v", 6, 1)
	items[3].Cost = 0
	items[5].Kind = "fax"
	r, m := api(t, in, "POST", "/api/v1/work", tok, items)
	if r.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid batch: %d %s", r.StatusCode, r.Body)
	}
	bad, _ := m["items"].(map[string]any)
	if len(bad) != 2 || bad["3"] != "cost must be at least 1" || !strings.Contains(fmt.Sprint(bad["5"]), "kind must be one of") || m["error"] == "" {
		t.Fatalf("item errors: %s", r.Body)
	}
	for _, body := range []any{"[]", "[{", batchOf("big", nodes.MaxBatch+1, 1)} {
		if r, m := api(t, in, "POST", "/api/v1/work", tok, body); r.StatusCode != http.StatusBadRequest || m["error"] == nil {
			t.Fatalf("bad batch body: %d %s", r.StatusCode, r.Body)
		}
	}
	if n := count(t, in, "SELECT count(*) FROM work"); n != 0 {
		t.Fatalf("work rows after invalid batches: %d", n)
	}
	if n := count(t, in, "SELECT used FROM nodes"); n != 0 {
		t.Fatalf("used after invalid batches: %d", n)
	}
}

func TestBatchPlacementDuplicateRefWritesNothing(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	tok := in.APIToken(t)
	items := batchOf("d", 5, 1)
	items[4].Ref = items[1].Ref
	r, m := api(t, in, "POST", "/api/v1/work", tok, items)
	if r.StatusCode != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "d-1") {
		t.Fatalf("duplicate in batch: %d %s", r.StatusCode, r.Body)
	}
	place(t, in, "call", "exists", 1)
	items = batchOf("e", 5, 1)
	items[2].Ref = "exists"
	r, m = api(t, in, "POST", "/api/v1/work", tok, items)
	if r.StatusCode != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "exists") ||
		fmt.Sprint(m["refs"]) != "[exists]" {
		t.Fatalf("existing ref in batch: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM work"); n != 1 {
		t.Fatalf("work rows: %d, want only the single placement", n)
	}
	countersMatchRows(t, in)
}

// Batches of two kinds, single placements and an administrator disabling
// and enabling a node all at once: no deadlock (Postgres breaks any, and
// the batch is retried), no overfill, counters equal to the rows.
func TestBatchPlacementConcurrentWithSinglesAndDisable(t *testing.T) {
	t.Parallel()
	in := cluster(t, 150, "m1", "m2", "m3", "m4")
	in.AddNode(t, "i1", "ivr", "127.0.0.1:5090", 40)
	exec(t, in, "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const batchers, batches, size = 6, 5, 40
	for b := range batchers {
		wg.Go(func() {
			for k := range batches {
				items := batchOf(fmt.Sprintf("cb%d-%d", b, k), size, 1+k%2)
				for i := 0; i < size; i += 8 {
					items[i].Kind = "ivr"
				}
				if _, err := in.Nodes().PlaceWorkBatch(ctx, testActor, items); err != nil {
					t.Errorf("batch %d/%d: %v", b, k, err)
				}
			}
		})
	}
	for s := range 4 {
		wg.Go(func() {
			for k := range 25 {
				if _, err := in.Nodes().PlaceWork(ctx, testActor, nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("cs%d-%d", s, k), Cost: 1}); err != nil {
					t.Errorf("single: %v", err)
				}
			}
		})
	}
	wg.Go(func() {
		for _, st := range []string{nodes.StateDisabled, nodes.StateEnabled, nodes.StateDisabled} {
			time.Sleep(20 * time.Millisecond)
			if _, _, err := in.Nodes().SetAdminState(ctx, testActor, "m2", st); err != nil {
				t.Errorf("set m2 %s: %v", st, err)
			}
		}
	})
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("placements did not finish: deadlock?")
	}
	want := batchers*batches*size + 4*25
	if n := count(t, in, "SELECT count(*) FROM work"); n != want {
		t.Fatalf("work rows: %d, want %d", n, want)
	}
	countersMatchRows(t, in)
	if n := count(t, in, "SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id WHERE n.name = 'm2' AND w.state IN ('assigned','active')"); n != 0 {
		t.Fatalf("disabled m2 still carries %d items", n)
	}
	if n := count(t, in, "SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id WHERE n.kind <> (CASE w.kind WHEN 'call' THEN 'media' ELSE w.kind END)"); n != 0 {
		t.Fatalf("%d items on a node of the wrong kind", n)
	}
}

func TestBatchAck(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	exec(t, in, "UPDATE nodes SET admin_state = 'draining' WHERE name = 'm2'")
	cred := enrol(t, in, "m1")
	a := place(t, in, "call", "a", 1)
	b := place(t, in, "call", "b", 1)
	c := place(t, in, "call", "c", 1)
	d := place(t, in, "call", "d", 1)
	exec(t, in, "UPDATE nodes SET admin_state = CASE name WHEN 'm1' THEN 'draining' ELSE 'enabled' END")
	e := place(t, in, "call", "e", 1)
	exec(t, in, "UPDATE nodes SET admin_state = 'enabled'")
	if e.Node != "m2" {
		t.Fatalf("e on %s", e.Node)
	}
	versionBefore := count(t, in, "SELECT assign_version FROM nodes WHERE name = 'm1'")
	r, m := api(t, in, "POST", "/api/v1/assignments/ack", cred, map[string]any{"acks": []map[string]any{
		{"id": a.ID, "epoch": a.Epoch, "state": "active"},
		{"id": b.ID, "epoch": b.Epoch, "state": "ended"},
		{"id": c.ID, "epoch": c.Epoch, "state": "failed"},
		{"id": d.ID, "epoch": d.Epoch + 1, "state": "active"},
		{"id": e.ID, "epoch": e.Epoch, "state": "active"},
		{"id": 987654321, "epoch": 1, "state": "active"},
		{"id": a.ID, "epoch": a.Epoch, "state": "ended"},
		{"id": d.ID, "epoch": d.Epoch, "state": "bogus"},
	}})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("batch ack: %d %s", r.StatusCode, r.Body)
	}
	res := m["results"].([]any)
	want := []struct {
		id     int64
		ok     bool
		status int
		err    string
	}{
		{a.ID, true, 0, ""}, {b.ID, true, 0, ""}, {c.ID, true, 0, ""},
		{d.ID, false, 409, "stale epoch"}, {e.ID, false, 404, "not on this node"},
		{987654321, false, 404, "assignment 987654321"}, {a.ID, false, 400, "twice"},
		{d.ID, false, 400, "state must be"},
	}
	if len(res) != len(want) {
		t.Fatalf("results: %s", r.Body)
	}
	for i, w := range want {
		got := res[i].(map[string]any)
		if int64(got["id"].(float64)) != w.id || (got["ok"] == true) != w.ok ||
			(!w.ok && (int(got["status"].(float64)) != w.status || !strings.Contains(fmt.Sprint(got["error"]), w.err))) {
			t.Fatalf("result %d = %v, want %+v", i, got, w)
		}
	}
	states := map[string]string{}
	rows, err := in.Pool().Query(context.Background(), "SELECT ref, state || '/' || coalesce((SELECT name FROM nodes WHERE id = node_id), '-') || '/' || epoch FROM work")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ref, st string
		if err := rows.Scan(&ref, &st); err != nil {
			t.Fatal(err)
		}
		states[ref] = st
	}
	rows.Close()
	// c failed: unplaced, then placed again (new epoch) on a node with room.
	if states["a"] != "active/m1/1" || states["b"] != "ended/m1/1" || !strings.HasPrefix(states["c"], "assigned/") || !strings.HasSuffix(states["c"], "/2") ||
		states["d"] != "assigned/m1/1" || states["e"] != "assigned/m2/1" {
		t.Fatalf("rows after batch ack: %v", states)
	}
	countersMatchRows(t, in)
	if after := count(t, in, "SELECT assign_version FROM nodes WHERE name = 'm1'"); after <= versionBefore {
		t.Fatal("ending and failing work did not bump the node's version")
	}
	// Only active acks: one statement, fenced the same way.
	r, _ = api(t, in, "POST", "/api/v1/assignments/ack", cred, map[string]any{"acks": []map[string]any{
		{"id": d.ID, "epoch": d.Epoch, "state": "active"}, {"id": e.ID, "epoch": e.Epoch, "state": "active"}}})
	if r.StatusCode != 200 || !strings.Contains(r.Body, `{"id":`+fmt.Sprint(d.ID)+`,"ok":true}`) || !strings.Contains(r.Body, `"status":404`) {
		t.Fatalf("active-only batch: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE ref = 'd' AND state = 'active'"); n != 1 {
		t.Fatal("d not active")
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE ref = 'e' AND state = 'assigned'"); n != 1 {
		t.Fatal("another node's ack changed e")
	}
	for _, body := range []any{map[string]any{"acks": []any{}}, "{", map[string]any{"acks": make([]map[string]any, nodes.MaxBatch+1)}} {
		if r, _ := api(t, in, "POST", "/api/v1/assignments/ack", cred, body); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("bad batch ack body: %d %s", r.StatusCode, r.Body)
		}
	}
	if r, _ := api(t, in, "POST", "/api/v1/assignments/ack", "", map[string]any{"acks": []any{}}); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("batch ack without credential: %d", r.StatusCode)
	}
}

// A real agent acks the assignments of one delivery with one batch: the
// rows were all made active by one statement (one transaction timestamp).
func TestAgentBatchAcks(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	exec(t, in, "UPDATE nodes SET health = 'pending'")
	jt := joinToken(t, in, "m1", time.Hour)
	dir := filepath.Join(t.TempDir(), "agent")
	if _, err := agent.Join(context.Background(), agent.JoinOptions{Servers: []string{in.URL}, Token: jt.Token, CAPin: in.Pin(), StateDir: dir, Version: "test"}); err != nil {
		t.Fatalf("join: %v", err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.RunOptions{StateDir: dir, Version: "test", PollWait: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	defer func() {
		cancel()
		<-done
	}()
	waitFor(t, "first heartbeat", func() bool {
		return count(t, in, "SELECT count(*) FROM nodes WHERE last_heartbeat_at IS NOT NULL") == 1
	})
	exec(t, in, "UPDATE nodes SET health = 'up'")
	if _, err := in.Nodes().PlaceWorkBatch(context.Background(), testActor, batchOf("ag", 25, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "25 assignments active", func() bool { return count(t, in, "SELECT count(*) FROM work WHERE state = 'active'") == 25 })
	if n := count(t, in, "SELECT count(DISTINCT updated_at) FROM work"); n != 1 {
		t.Fatalf("the 25 acks took %d statements, want one batch", n)
	}
	if strings.Contains(logs.String(), "no batch ack API") {
		t.Fatalf("agent fell back to single acks:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
