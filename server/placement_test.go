package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/server/servertest"
)

var testActor = nodes.Actor{Name: "test", Addr: "local"}

// cluster starts an instance with n media nodes, all up.
func cluster(t *testing.T, capacity int, names ...string) *servertest.Instance {
	t.Helper()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	for i, n := range names {
		in.AddNode(t, n, "media", fmt.Sprintf("127.0.0.1:%d", 5060+i), capacity)
	}
	exec(t, in, "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())")
	return in
}

func place(t *testing.T, in *servertest.Instance, kind, ref string, cost int) nodes.Placement {
	t.Helper()
	p, err := in.Nodes().PlaceWork(context.Background(), testActor, nodes.WorkInput{Kind: kind, Ref: ref, Cost: cost})
	if err != nil {
		t.Fatalf("place %s: %v", ref, err)
	}
	return p
}

func usedBy(t *testing.T, in *servertest.Instance) map[string]int {
	t.Helper()
	rows, err := in.Pool().Query(context.Background(), `SELECT n.name, count(w.id) FROM nodes n
		LEFT JOIN work w ON w.node_id = n.id AND w.state IN ('assigned','active') GROUP BY n.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		out[name] = n
	}
	return out
}

func TestPlacementEvenSpread(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1", "m2", "m3")
	for i := 0; i < 30; i++ {
		if p := place(t, in, "call", fmt.Sprintf("call-%d", i), 1); p.State != "assigned" {
			t.Fatalf("call %d: %s", i, p.State)
		}
	}
	if u := usedBy(t, in); u["m1"] != 10 || u["m2"] != 10 || u["m3"] != 10 {
		t.Fatalf("spread: %v", u)
	}
	// The used counter agrees with the work rows.
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE used <> 10"); n != 0 {
		t.Fatal("used counters disagree with work")
	}
}

func TestPlacementConcurrentNeverOverfills(t *testing.T) {
	t.Parallel()
	in := cluster(t, 50, "m1", "m2")
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Go(func() {
			_, err := in.Nodes().PlaceWork(context.Background(), testActor, nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("c%d", i), Cost: 1})
			if err != nil {
				t.Errorf("place: %v", err)
			}
		})
	}
	wg.Wait()
	u := usedBy(t, in)
	if u["m1"] != 50 || u["m2"] != 50 {
		t.Fatalf("placed: %v", u)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'unplaced'"); n != 100 {
		t.Fatalf("unplaced: %d", n)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE used > capacity"); n != 0 {
		t.Fatal("a node is above capacity")
	}
}

func TestUnplacedThenPlacedWhenCapacityReturns(t *testing.T) {
	t.Parallel()
	in := cluster(t, 2, "m1")
	place(t, in, "call", "a", 1)
	place(t, in, "call", "b", 1)
	if p := place(t, in, "call", "c", 1); p.State != "unplaced" {
		t.Fatalf("third call: %s", p.State)
	}
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'unplaced'"); n != 1 {
		t.Fatalf("unplaced events: %d", n)
	}
	if n := count(t, in, "SELECT count(*) FROM alerts WHERE type = 'capacity'"); n != 1 {
		t.Fatalf("capacity alerts: %d", n)
	}
	if _, err := in.Nodes().UpdateNode(context.Background(), testActor, "m1", nodes.NodeInput{Address: "127.0.0.1:5060", Capacity: "5"}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'unplaced'"); n != 0 {
		t.Fatalf("still unplaced after capacity raised: %d", n)
	}
}

func TestDisableMovesAllDrainStopsNew(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1", "m2", "m3")
	// Fill m1 only, by draining the others first.
	for _, n := range []string{"m2", "m3"} {
		if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, n, nodes.StateDraining); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 30; i++ {
		place(t, in, "call", fmt.Sprintf("c%d", i), 1)
	}
	if u := usedBy(t, in); u["m1"] != 30 {
		t.Fatalf("drain did not stop new work: %v", u)
	}
	// m3 has 60 free more than m2: fill m2 a little so the spread is uneven.
	exec(t, in, "UPDATE nodes SET capacity = 40 WHERE name = 'm2'")
	for _, n := range []string{"m2", "m3"} {
		if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, n, nodes.StateEnabled); err != nil {
			t.Fatal(err)
		}
	}
	epochsBefore := count(t, in, "SELECT sum(epoch) FROM work")
	_, mr, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", nodes.StateDisabled)
	if err != nil {
		t.Fatal(err)
	}
	u := usedBy(t, in)
	if mr.Moved != 30 || u["m1"] != 0 || u["m2"]+u["m3"] != 30 {
		t.Fatalf("moved %d, now %v", mr.Moved, u)
	}
	// Proportional to free capacity: 40 vs 100 free → about 9 and 21.
	if u["m2"] < 7 || u["m2"] > 11 {
		t.Fatalf("not proportional: %v", u)
	}
	if got := count(t, in, "SELECT sum(epoch) FROM work"); got != epochsBefore+30 {
		t.Fatalf("epochs grew by %d, want 30", got-epochsBefore)
	}
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'move' AND message LIKE '%30 calls moved%'"); n != 1 {
		t.Fatal("no single move event for the 30 calls")
	}
}

func enrol(t *testing.T, in *servertest.Instance, node string) string {
	t.Helper()
	jt := joinToken(t, in, node, time.Hour)
	r, m := api(t, in, "POST", "/api/v1/enroll", "", map[string]string{"token": jt.Token})
	if r.StatusCode != 200 {
		t.Fatalf("enrol %s: %d", node, r.StatusCode)
	}
	return fmt.Sprint(m["credential"])
}

func TestLongPollWakesOnChangeAndStaleAcks(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	cred := enrol(t, in, "m1")
	_, first := api(t, in, "GET", "/api/v1/assignments?since=0&wait=1s", cred, nil)
	v := int64(first["version"].(float64))

	type result struct {
		body map[string]any
		at   time.Time
		err  error
	}
	// The poll waits the longest the server allows. Only the notification
	// can answer it early: without it, it answers at its wait, with the
	// new version too. So the test asks for the answer within half the
	// wait of the change, a bound no busy machine comes near and a
	// missing notification cannot meet.
	const wait = 60 * time.Second
	done := make(chan result, 1)
	go func() {
		// Not api(): its client gives up after 30 s, and a test goroutine
		// must not call t.Fatal.
		c := in.Client(t)
		c.Timeout = 2 * wait
		req, _ := http.NewRequest("GET", in.URL+fmt.Sprintf("/api/v1/assignments?since=%d&wait=%s", v, wait), nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		var m map[string]any
		resp, err := c.Do(req)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
		}
		done <- result{m, time.Now(), err}
	}()
	time.Sleep(200 * time.Millisecond) // let the poll park
	exec(t, in, "UPDATE nodes SET admin_state = 'draining' WHERE name = 'm2'")
	placedAt := time.Now()
	p := place(t, in, "call", "wake-me", 1)
	res := <-done
	if res.err != nil {
		t.Fatalf("long-poll: %v", res.err)
	}
	if !res.at.After(placedAt) {
		t.Fatal("long-poll answered before the change")
	}
	if took := res.at.Sub(placedAt); took > wait/2 {
		t.Fatalf("long-poll answered %s after the change, near its wait of %s: the change did not wake it", took.Round(time.Millisecond), wait)
	}
	as := res.body["assignments"].([]any)
	if int64(res.body["version"].(float64)) <= v || len(as) != 1 || as[0].(map[string]any)["ref"] != "wake-me" {
		t.Fatalf("woken poll: %v", res.body)
	}

	// Ack active with the right epoch, then move the work and ack with the stale one.
	if r, _ := api(t, in, "POST", fmt.Sprintf("/api/v1/assignments/%d/ack", p.ID), cred, map[string]any{"state": "active", "epoch": p.Epoch}); r.StatusCode != 200 {
		t.Fatalf("ack: %d %s", r.StatusCode, r.Body)
	}
	exec(t, in, "UPDATE nodes SET admin_state = 'enabled' WHERE name = 'm2'")
	if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", nodes.StateDraining); err != nil {
		t.Fatal(err)
	}
	// Move it by hand through the domain: disable m1 moves its work to m2.
	if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", nodes.StateDisabled); err != nil {
		t.Fatal(err)
	}
	before := count(t, in, "SELECT count(*) FROM work WHERE ref = 'wake-me' AND state = 'assigned' AND epoch = $1", p.Epoch+1)
	if before != 1 {
		t.Fatal("work did not move with a new epoch")
	}
	// m1 is disabled now: its agent is refused.
	if r, _ := api(t, in, "POST", fmt.Sprintf("/api/v1/assignments/%d/ack", p.ID), cred, map[string]any{"state": "ended", "epoch": p.Epoch}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("disabled node ack: %d", r.StatusCode)
	}
	// Re-enable m1; the stale-epoch ack changes nothing.
	if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", nodes.StateEnabled); err != nil {
		t.Fatal(err)
	}
	r, m := api(t, in, "POST", fmt.Sprintf("/api/v1/assignments/%d/ack", p.ID), cred, map[string]any{"state": "ended", "epoch": p.Epoch})
	if r.StatusCode != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "stale epoch") {
		t.Fatalf("stale ack: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE ref = 'wake-me' AND state = 'assigned'"); n != 1 {
		t.Fatal("stale ack changed the work")
	}
	// An ack for work on another node is a 404; a bad state a 400.
	cred2 := enrol(t, in, "m2")
	other := place(t, in, "call", "other", 1)
	if r, _ := api(t, in, "POST", fmt.Sprintf("/api/v1/assignments/%d/ack", p.ID), cred, map[string]any{"state": "active", "epoch": p.Epoch + 1}); r.StatusCode != http.StatusNotFound {
		t.Fatalf("ack for work on another node: %d", r.StatusCode)
	}
	if r, _ := api(t, in, "POST", fmt.Sprintf("/api/v1/assignments/%d/ack", other.ID), cred2, map[string]any{"state": "bogus", "epoch": other.Epoch}); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad ack state: %d", r.StatusCode)
	}
}

func TestAgentJoinsRunsAndIsRefusedWhenRemoved(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1")
	exec(t, in, "UPDATE nodes SET health = 'pending'")
	jt := joinToken(t, in, "m1", time.Hour)
	dir := filepath.Join(t.TempDir(), "agent")
	if _, err := agent.Join(context.Background(), agent.JoinOptions{Servers: []string{in.URL}, Token: jt.Token, CAPin: in.Pin(), StateDir: dir, Version: "test"}); err != nil {
		t.Fatalf("join: %v", err)
	}
	hookLog := filepath.Join(t.TempDir(), "hooks.log")
	run := func(ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() {
			done <- agent.Run(ctx, agent.RunOptions{StateDir: dir, Version: "test", PollWait: 2 * time.Second,
				MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
				OnAssign: `echo "$CALLPLANE_ACTION $CALLPLANE_REF $CALLPLANE_EPOCH" >> ` + hookLog})
		}()
		return done
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx)
	waitFor(t, "first heartbeat", func() bool {
		return count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND last_heartbeat_at IS NOT NULL AND agent_version = 'test'") == 1
	})
	// A heartbeat alone never brings a node up (the checker, idle here,
	// waits for its probe to agree).
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND health = 'pending'"); n != 1 {
		t.Fatal("a heartbeat brought the node up without a probe")
	}
	exec(t, in, "UPDATE nodes SET health = 'up'")
	p := place(t, in, "call", "call-x", 1)
	waitFor(t, "assignment active", func() bool {
		return count(t, in, "SELECT count(*) FROM work WHERE id = $1 AND state = 'active'", p.ID) == 1
	})
	// Restart the agent: nothing is duplicated or re-acked.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent stop: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = run(ctx)
	time.Sleep(500 * time.Millisecond)
	if n := count(t, in, "SELECT count(*) FROM work"); n != 1 {
		t.Fatalf("work rows after restart: %d", n)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE id = $1 AND state = 'active' AND epoch = $2", p.ID, p.Epoch); n != 1 {
		t.Fatal("work changed across an agent restart")
	}
	b, _ := os.ReadFile(hookLog)
	if got := strings.Count(string(b), "start call-x"); got != 2 {
		t.Fatalf("start hook ran %d times over two processes: %q", got, b)
	}
	// Removing the node revokes its credential: the agent is refused and exits.
	if _, err := in.Nodes().RemoveNode(context.Background(), testActor, "m1", true); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "credential rejected") {
			t.Fatalf("agent after removal: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("agent kept running after its node was removed")
	}
}

func TestCredentialRotation(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1")
	// The overlap is ended below with raw SQL, which sends no notification:
	// a short cache keeps the wait for it short.
	in.Nodes().SetCredentialCacheTTL(100 * time.Millisecond)
	jt := joinToken(t, in, "m1", time.Hour)
	dir := filepath.Join(t.TempDir(), "agent")
	if _, err := agent.Join(context.Background(), agent.JoinOptions{Servers: []string{in.URL}, Token: jt.Token, CAPin: in.Pin(), StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	before, _ := agent.Load(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go agent.Run(ctx, agent.RunOptions{StateDir: dir, PollWait: time.Second})
	if err := in.Nodes().RequestRotation(context.Background(), testActor, "m1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rotated credential stored", func() bool {
		st, err := agent.Load(dir)
		return err == nil && st.Credential != before.Credential
	})
	after, _ := agent.Load(dir)
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", after.Credential, map[string]any{}); r.StatusCode != 200 {
		t.Fatalf("new credential: %d", r.StatusCode)
	}
	// The old one still works during the overlap, then stops.
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", before.Credential, map[string]any{}); r.StatusCode != 200 {
		t.Fatalf("old credential during overlap: %d", r.StatusCode)
	}
	// End the overlap behind Callplane's back (no notification): the
	// cached check is trusted at most CredentialCacheTTL longer.
	exec(t, in, "UPDATE node_credentials SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL")
	waitFor(t, "the old credential refused after the overlap", func() bool {
		r, _ := api(t, in, "POST", "/api/v1/heartbeat", before.Credential, map[string]any{})
		return r.StatusCode == 401
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func TestShutdownAnswersLongPollsAndReleasesLeadership(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1")
	cred := enrol(t, in, "m1")
	_, first := api(t, in, "GET", "/api/v1/assignments?since=0&wait=1s", cred, nil)
	v := int64(first["version"].(float64))
	got := make(chan int, 1)
	go func() {
		r, _ := api(t, in, "GET", fmt.Sprintf("/api/v1/assignments?since=%d&wait=60s", v), cred, nil)
		got <- r.StatusCode
	}()
	waitFor(t, "a leader", func() bool { return in.LeaderID(context.Background()) != "" })
	time.Sleep(200 * time.Millisecond) // let the poll park
	in.Stop()
	select {
	case code := <-got:
		if code != http.StatusOK {
			t.Fatalf("parked long-poll answered %d at shutdown", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("parked long-poll was not answered at shutdown")
	}
	conn, err := pgx.Connect(context.Background(), in.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var live int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM leader_lease WHERE expires_at > now()").Scan(&live); err != nil || live != 0 {
		t.Fatalf("leadership not released at shutdown (%d, %v)", live, err)
	}
}

func TestHeartbeatReconcilesRunningWork(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	exec(t, in, "UPDATE nodes SET admin_state = 'draining' WHERE name = 'm2'")
	cred1 := enrol(t, in, "m1")
	p := place(t, in, "call", "lost-ack", 1)
	// The agent runs the work but its ack was lost: the heartbeat fixes it.
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", cred1, map[string]any{"load": 1, "running": []map[string]int64{{"id": p.ID, "epoch": p.Epoch}}}); r.StatusCode != 200 {
		t.Fatalf("heartbeat: %d", r.StatusCode)
	}
	// Reports are reconciled together at the next flush, after the beat's
	// answer.
	waitFor(t, "running work reported in a heartbeat marked active", func() bool {
		return count(t, in, "SELECT count(*) FROM work WHERE id = $1 AND state = 'active'", p.ID) == 1
	})
	// An agent running work it should not gets its desired set re-sent.
	exec(t, in, "UPDATE nodes SET admin_state = 'enabled' WHERE name = 'm2'")
	cred2 := enrol(t, in, "m2")
	before := count(t, in, "SELECT assign_version FROM nodes WHERE name = 'm2'")
	api(t, in, "POST", "/api/v1/heartbeat", cred2, map[string]any{"running": []map[string]int64{{"id": p.ID, "epoch": p.Epoch}}})
	waitFor(t, "a stray running assignment bumps the node's version", func() bool {
		return count(t, in, "SELECT assign_version FROM nodes WHERE name = 'm2'") > before
	})
	if n := count(t, in, "SELECT count(*) FROM work WHERE id = $1 AND state = 'active' AND node_id = (SELECT id FROM nodes WHERE name = 'm1')", p.ID); n != 1 {
		t.Fatal("reconciling another node changed the work")
	}
}

func TestEndedAckPlacesWaitingWork(t *testing.T) {
	t.Parallel()
	in := cluster(t, 1, "m1")
	cred := enrol(t, in, "m1")
	a := place(t, in, "call", "first", 1)
	if b := place(t, in, "call", "second", 1); b.State != "unplaced" {
		t.Fatalf("second call: %s", b.State)
	}
	if r, _ := api(t, in, "POST", fmt.Sprintf("/api/v1/assignments/%d/ack", a.ID), cred, map[string]any{"state": "ended", "epoch": a.Epoch}); r.StatusCode != 200 {
		t.Fatalf("ended ack: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE ref = 'second' AND state = 'assigned'"); n != 1 {
		t.Fatal("the waiting call was not placed when the first ended")
	}
}

// Access changes made through one instance reach the cached credential
// checks of another at once.
func TestDisableThroughOneInstanceRefusesAgentOnAnother(t *testing.T) {
	t.Parallel()
	a := cluster(t, 10, "m1")
	b := servertest.Start(t, servertest.Options{DatabaseURL: a.DBURL, Settings: servertest.NoProbes})
	cred := enrol(t, a, "m1")
	// With a cache this long, only the notification can refresh b's view.
	b.Nodes().SetCredentialCacheTTL(time.Hour)
	// Warm b's cache with a good check.
	if r, _ := api(t, b, "POST", "/api/v1/heartbeat", cred, map[string]any{}); r.StatusCode != 200 {
		t.Fatalf("heartbeat on b: %d", r.StatusCode)
	}
	if _, _, err := a.Nodes().SetAdminState(context.Background(), testActor, "m1", nodes.StateDisabled); err != nil {
		t.Fatal(err)
	}
	// A disabled node keeps heartbeating; it is refused its work.
	waitFor(t, "b refuses the disabled node its work", func() bool {
		r, _ := api(t, b, "GET", "/api/v1/assignments?wait=0s", cred, nil)
		return r.StatusCode == http.StatusForbidden
	})
	if _, err := a.Nodes().RemoveNode(context.Background(), testActor, "m1", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b refuses the removed node", func() bool {
		r, _ := api(t, b, "POST", "/api/v1/heartbeat", cred, map[string]any{})
		return r.StatusCode == http.StatusUnauthorized
	})
}

// The long-poll answers the whole set unless the agent asks for a delta
// (DESIGN.md's form stays the default); with delta=1 it answers only what
// changed since the agent's version, removals included; a bad delta is a
// 400 naming it.
func TestLongPollDelta(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	for i := range 3 {
		place(t, in, "call", fmt.Sprintf("d%d", i), 1)
	}
	_, first := api(t, in, "GET", "/api/v1/assignments?since=0&wait=0s&delta=1", cred, nil)
	if first["delta"] != nil || len(first["assignments"].([]any)) != 3 {
		t.Fatalf("the first answer must be the whole set: %v", first)
	}
	v := int64(first["version"].(float64))
	place(t, in, "call", "d3", 1)
	if _, err := in.Nodes().EndWork(context.Background(), testActor, "d0"); err != nil {
		t.Fatal(err)
	}
	_, whole := api(t, in, "GET", fmt.Sprintf("/api/v1/assignments?since=%d&wait=0s", v), cred, nil)
	if whole["delta"] != nil || len(whole["assignments"].([]any)) != 3 {
		t.Fatalf("without delta=1 the answer must be the whole set (d1, d2, d3): %v", whole)
	}
	r, delta := api(t, in, "GET", fmt.Sprintf("/api/v1/assignments?since=%d&wait=0s&delta=1", v), cred, nil)
	if r.StatusCode != 200 || delta["delta"] != true {
		t.Fatalf("delta=1 after a change: %d %v", r.StatusCode, delta)
	}
	as := delta["assignments"].([]any)
	removed, _ := delta["removed"].([]any)
	if len(as) != 1 || as[0].(map[string]any)["ref"] != "d3" || len(removed) != 1 {
		t.Fatalf("the delta must carry d3 and the removal of d0: %v", delta)
	}
	if delta["version"] != whole["version"] {
		t.Fatalf("the delta's version %v differs from the whole set's %v", delta["version"], whole["version"])
	}
	r, _ = api(t, in, "GET", fmt.Sprintf("/api/v1/assignments?since=%d&wait=0s&delta=yes", v), cred, nil)
	if r.StatusCode != 400 || !strings.Contains(string(r.Body), "delta") {
		t.Fatalf("a bad delta: %d %s", r.StatusCode, r.Body)
	}
}

// A POST of the long-poll records the acks it carries, exactly as the
// batch ack does, before it polls, and answers their results with the
// desired set: a delivery is acked and the next asked for in one request.
func TestLongPollCarriesAcks(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	acks, v := placeForAcks(t, in, cred, "p", 2)
	stale := map[string]any{"id": acks[0]["id"], "epoch": 99, "state": "active"}
	path := fmt.Sprintf("/api/v1/assignments?since=%d&wait=0s&delta=1", v)
	r, ans := api(t, in, "POST", path, cred, map[string]any{"acks": acks})
	if r.StatusCode != 200 {
		t.Fatalf("poll with acks: %d %s", r.StatusCode, r.Body)
	}
	results, _ := ans["acks"].([]any)
	if len(results) != 2 || results[0].(map[string]any)["ok"] != true || results[1].(map[string]any)["ok"] != true {
		t.Fatalf("ack results = %v, want two ok", ans["acks"])
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after the poll carried their acks, want 2", n)
	}
	if int64(ans["version"].(float64)) != v || len(ans["assignments"].([]any)) != 0 {
		t.Fatalf("the answer after the agent's own acks must be an empty delta at version %d: %v", v, ans)
	}
	r, ans = api(t, in, "POST", path, cred, map[string]any{"acks": []any{stale}})
	if results, _ := ans["acks"].([]any); r.StatusCode != 200 || len(results) != 1 || results[0].(map[string]any)["status"] != float64(409) {
		t.Fatalf("a stale epoch: %d %s, want its result 409", r.StatusCode, r.Body)
	}

	// A poll with no acks is a plain poll.
	r, ans = api(t, in, "POST", path, cred, map[string]any{"acks": []any{}})
	if r.StatusCode != 200 || ans["acks"] != nil {
		t.Fatalf("poll with no acks: %d %s", r.StatusCode, r.Body)
	}
	// Bad acks are refused with the field named and change nothing.
	place(t, in, "call", "p2", 1)
	r, _ = api(t, in, "POST", path, cred, map[string]any{"acks": []any{map[string]any{"id": 1, "epoch": 1, "state": "running"}}})
	if r.StatusCode != 200 || !strings.Contains(string(r.Body), "state must be") {
		t.Fatalf("a bad ack state: %d %s", r.StatusCode, r.Body)
	}
	r, _ = api(t, in, "POST", path, cred, `{"acks": [{"id": "x"}]}`)
	if r.StatusCode != 400 || !strings.Contains(string(r.Body), "id") {
		t.Fatalf("a bad ack body: %d %s", r.StatusCode, r.Body)
	}
	many := make([]map[string]any, 1001)
	for i := range many {
		many[i] = map[string]any{"id": i + 1, "epoch": 1, "state": "active"}
	}
	r, _ = api(t, in, "POST", path, cred, map[string]any{"acks": many})
	if r.StatusCode != 400 || !strings.Contains(string(r.Body), "acks") {
		t.Fatalf("too many acks: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after refused acks, want 2", n)
	}
}
