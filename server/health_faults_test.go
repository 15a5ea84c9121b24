package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

// save stores settings over the test's defaults.
func (env *healthEnv) save(t *testing.T, over map[string]string) {
	t.Helper()
	store := settings.NewStore(env.pool, settings.Defaults{}, "https://portal.example", nil)
	cur, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v := cur.Values()
	for k, x := range over {
		v[k] = x
	}
	if _, err := store.Save(context.Background(), nodes.Actor{Name: "test"}, v); err != nil {
		t.Fatalf("save settings: %v", err)
	}
}

func queryInt(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func subjects(env *healthEnv) string {
	var out []string
	for _, m := range env.smtp.Messages() {
		out = append(out, m.Subject)
	}
	return strings.Join(out, " | ")
}

// A node whose agent stops heartbeating while its service answers the
// probe is "agent lost": it stays up, keeps its work, sends no DOWN email,
// and is mailed once after the grace; the agent's return is mailed too.
func TestStaleHeartbeatWithPassingProbeIsAgentLost(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	env.save(t, map[string]string{settings.KeyAgentLostGrace: "1s"})
	ep1 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	stop := addNode(t, in, "media-1", nodes.KindMedia, ep1.Address(), 20)
	addNode(t, in, "media-2", nodes.KindMedia, ep2.Address(), 20)
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	waitHealth(t, env.pool, "media-2", nodes.HealthUp)
	placeN(t, in, nodes.WorkCall, "call", 8)
	before := liveWork(t, env.pool, "media-1")

	stop() // the agent process dies; the media server still answers
	waitWithin(t, "media-1 flagged agent lost", 30*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE name = 'media-1' AND agent_lost_since IS NOT NULL") == 1
	})
	msgs := env.smtp.WaitMessages(t, 1, 30*time.Second)
	if !strings.Contains(msgs[0].Subject, "AGENT LOST: media-1") || !strings.Contains(msgs[0].Body, "nothing was failed over") {
		t.Fatalf("agent lost email %q:\n%s", msgs[0].Subject, msgs[0].Body)
	}
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthUp {
		t.Fatalf("agent lost made the node %s; want up", h)
	}
	if got := liveWork(t, env.pool, "media-1"); got != before {
		t.Fatalf("agent lost moved work: %d calls left of %d", got, before)
	}
	// New work, which its agent would have to take up, goes elsewhere.
	other := liveWork(t, env.pool, "media-2")
	placeN(t, in, nodes.WorkCall, "later", 4)
	if got := liveWork(t, env.pool, "media-1"); got != before {
		t.Fatalf("new work went to the node whose agent is lost: %d calls, had %d", got, before)
	}
	if got := liveWork(t, env.pool, "media-2"); got != other+4 {
		t.Fatalf("media-2 took %d of the 4 new calls", got-other)
	}
	// The node page and the API show it.
	viewer := in.User(t, "viewer@example.com", "viewer")
	if page := in.Get(t, viewer, "/nodes/media-1"); !strings.Contains(page.Body, `data-testid="agent-lost"`) {
		t.Fatal("node page does not show agent lost")
	}

	req, _ := http.NewRequest(http.MethodGet, in.URL+"/api/v1/nodes/media-1", nil)
	req.Header.Set("Authorization", "Bearer "+in.APIToken(t))
	var api struct {
		Health    string `json:"health"`
		AgentLost bool   `json:"agent_lost"`
	}
	if r := in.Do(t, in.Client(t), req); json.Unmarshal([]byte(r.Body), &api) != nil || !api.AgentLost || api.Health != nodes.HealthUp {
		t.Fatalf("API does not show the node up and agent lost: %s", r.Body)
	}

	runAgent(t, in, "media-1", agent.RunOptions{}) // a new agent joins
	waitWithin(t, "agent lost cleared", 30*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE name = 'media-1' AND agent_lost_since IS NULL") == 1
	})
	msgs = env.smtp.WaitMessages(t, 2, 30*time.Second)
	if !strings.Contains(msgs[1].Subject, "AGENT BACK: media-1") {
		t.Fatalf("second email %q", msgs[1].Subject)
	}
	emailCountStays(t, env.smtp, 2)
	if strings.Contains(subjects(env), "DOWN") {
		t.Fatalf("a DOWN email went out: %s", subjects(env))
	}
}

// Right after taking over, a stale heartbeat is not held against a node:
// the control plane may have been the one away. Staleness counts once the
// checker has led, with the database reachable, for the stale time.
func TestHeartbeatStalenessCountsOnlyAfterTheGrace(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	env.save(t, map[string]string{settings.KeyHeartbeatStale: "3s"})
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	ep := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	svc := nodes.NewService(env.pool, log)
	if _, err := svc.AddNode(ctx, nodes.Actor{Name: "test"}, nodes.NodeInput{Name: "media-1", Kind: nodes.KindMedia, Address: ep.Address(), Capacity: "5"}); err != nil {
		t.Fatal(err)
	}
	// Up, with an agent whose last heartbeat is an hour old (the agents
	// could not reach the control plane while it was away).
	if _, err := env.pool.Exec(ctx, `UPDATE nodes SET health = 'up', enrolled_at = now(), last_heartbeat_at = now() - interval '1 hour'`); err != nil {
		t.Fatal(err)
	}
	lead := server.NewLeader(env.pool, "cm-x", 5*time.Second, log)
	lctx, stopLead := context.WithCancel(ctx)
	t.Cleanup(stopLead)
	go lead.Run(lctx)
	var epoch int64
	waitWithin(t, "leadership", 10*time.Second, func() bool { var ok bool; epoch, ok = lead.Epoch(); return ok })
	store := health.NewStore(svc, env.pool, settings.Defaults{}, "", log)
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chk := health.NewChecker(svc, store, lead, log)
	first := time.Now()
	if err := chk.Round(ctx, epoch, st); err != nil {
		t.Fatal(err)
	}
	var detail string
	_ = env.pool.QueryRow(ctx, "SELECT last_probe_detail FROM nodes WHERE name = 'media-1'").Scan(&detail)
	if n := queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE agent_lost_since IS NOT NULL"); n != 0 || !strings.Contains(detail, "not counted") {
		t.Fatalf("first round after takeover flagged the agent (flagged %d, detail %q)", n, detail)
	}
	var flaggedAt time.Time
	waitWithin(t, "agent lost once the grace is over", 20*time.Second, func() bool {
		if err := chk.Round(ctx, epoch, st); err != nil {
			t.Fatal(err)
		}
		flaggedAt = time.Now()
		return queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE agent_lost_since IS NOT NULL") == 1
	})
	if flaggedAt.Sub(first) < st.HeartbeatStale {
		t.Fatalf("flagged %s after the first round; the grace is %s", flaggedAt.Sub(first), st.HeartbeatStale)
	}
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthUp {
		t.Fatalf("health %s; want up (the probe passes)", h)
	}
}

// When most nodes fail at once the checker distrusts itself: one
// DISRUPTION email, no failover and no DOWN emails until an administrator
// confirms (audited); then the work moves and the DOWN emails go out.
func TestDisruptionHoldsFailoverUntilConfirmed(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	in := env.start(t, "cm-a")
	var eps []*probe.Endpoint
	for i := range 4 {
		ep := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
		eps = append(eps, ep)
		addNode(t, in, fmt.Sprintf("media-%d", i), nodes.KindMedia, ep.Address(), 20)
	}
	for i := range 4 {
		waitHealth(t, env.pool, fmt.Sprintf("media-%d", i), nodes.HealthUp)
	}
	placeN(t, in, nodes.WorkCall, "call", 12)
	before := map[string]int{}
	for i := range 3 {
		name := fmt.Sprintf("media-%d", i)
		before[name] = liveWork(t, env.pool, name)
	}
	for _, ep := range eps[:3] { // 3 of 4 fail together
		_ = ep.Close()
	}
	msgs := env.smtp.WaitMessages(t, 1, 30*time.Second)
	if !strings.Contains(msgs[0].Subject, "DISRUPTION: 3 of 4 nodes") || !strings.Contains(msgs[0].Body, "moves no work automatically") {
		t.Fatalf("disruption email %q:\n%s", msgs[0].Subject, msgs[0].Body)
	}
	for name := range before {
		waitHealth(t, env.pool, name, nodes.HealthDown)
	}
	emailCountStays(t, env.smtp, 1)
	for name, n := range before {
		if got := liveWork(t, env.pool, name); got != n {
			t.Fatalf("disruption: %s carries %d calls, want %d (no failover)", name, got, n)
		}
	}
	viewer := in.User(t, "viewer@example.com", "viewer")
	if page := in.Get(t, viewer, "/nodes"); !strings.Contains(page.Body, `data-testid="disruption-banner"`) {
		t.Fatal("no disruption banner on the nodes page")
	}
	if r := in.PostForm(t, viewer, "/settings/disruption/confirm", url.Values{}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer confirmed a disruption: %d", r.StatusCode)
	}

	admin := in.User(t, "admin@example.com", "admin")
	page := in.Get(t, admin, "/settings")
	if !strings.Contains(page.Body, `data-testid="disruption-confirm"`) || !strings.Contains(page.Body, `name="disruption_share"`) {
		t.Fatal("settings page lacks the disruption confirm button or the disruption_share setting")
	}
	if r := in.PostForm(t, admin, "/settings/disruption/confirm", url.Values{}); r.StatusCode != http.StatusOK {
		t.Fatalf("confirm: %d %s", r.StatusCode, r.Body)
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM audit_log WHERE action = 'health.disruption.confirm' AND result = 'ok' AND actor = 'admin@example.com'"); n != 1 {
		t.Fatalf("confirm audited %d times", n)
	}
	for name := range before {
		waitWithin(t, name+"'s calls moved", 30*time.Second, func() bool { return liveWork(t, env.pool, name) == 0 })
	}
	if got := liveWork(t, env.pool, "media-3"); got != 12 {
		t.Fatalf("media-3 carries %d calls; want 12", got)
	}
	waitWithin(t, "DOWN emails after the confirm", 30*time.Second, func() bool {
		return strings.Count(subjects(env), "DOWN") >= 1
	})
	all := subjects(env)
	for name := range before {
		if !strings.Contains(all, "DOWN") || queryInt(t, env.pool, "SELECT count(*) FROM alerts WHERE node_name = $1 AND type = 'health'", name) != 1 {
			t.Fatalf("no DOWN alert for %s after the confirm: %s", name, all)
		}
	}
	// A second confirm is refused, and audited as refused.
	if r := in.PostForm(t, admin, "/settings/disruption/confirm", url.Values{}); r.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("second confirm: %d", r.StatusCode)
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM audit_log WHERE action = 'health.disruption.confirm' AND result = 'error'"); n != 1 {
		t.Fatalf("refused confirm audited %d times", n)
	}
}

// A disabled node keeps heartbeating and being probed: its health stays
// true, it raises no alert, and enabling it sends nothing.
func TestDisabledNodeKeepsHeartbeatingAndEnablingSendsNothing(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "media-1", nodes.KindMedia, ep1.Address(), 20)
	addNode(t, in, "media-2", nodes.KindMedia, ep2.Address(), 20)
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	waitHealth(t, env.pool, "media-2", nodes.HealthUp)
	placeN(t, in, nodes.WorkCall, "call", 6)
	ctx := context.Background()
	if _, _, err := in.Nodes().SetAdminState(ctx, nodes.Actor{Name: "admin@example.com"}, "media-1", nodes.StateDisabled); err != nil {
		t.Fatal(err)
	}
	var disabledAt time.Time
	_ = env.pool.QueryRow(ctx, "SELECT now()").Scan(&disabledAt)
	// Heartbeats go on well past the stale time.
	waitWithin(t, "heartbeats of the disabled node", 30*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE name = 'media-1' AND last_heartbeat_at > $1::timestamptz + interval '4 seconds'", disabledAt) == 1
	})
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthUp {
		t.Fatalf("disabled healthy node is %s; want up", h)
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE name = 'media-1' AND agent_lost_since IS NOT NULL"); n != 0 {
		t.Fatal("disabled node's agent flagged lost")
	}
	if got := liveWork(t, env.pool, "media-1"); got != 0 {
		t.Fatalf("disabled node carries %d calls", got)
	}
	// Its real failures show, silently.
	_ = ep1.Close()
	waitHealth(t, env.pool, "media-1", nodes.HealthDown)
	probeEndpoint(t, probe.KindMedia, ep1.Address())
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	if _, _, err := in.Nodes().SetAdminState(ctx, nodes.Actor{Name: "admin@example.com"}, "media-1", nodes.StateEnabled); err != nil {
		t.Fatal(err)
	}
	emailCountStays(t, env.smtp, 0)
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthUp {
		t.Fatalf("enabled node is %s", h)
	}
}

// The heartbeat of a disabled node is answered 200 with its admin state;
// its assignments stay refused.
func TestHeartbeatOfDisabledNodeIsAccepted(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.AddNode(t, "media-1", "media", "127.0.0.1:5060", 10)
	res, err := in.Nodes().Enroll(context.Background(), nodes.EnrollRequest{Token: joinToken(t, in, "media-1", time.Hour).Token, Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := in.Nodes().SetAdminState(context.Background(), nodes.Actor{Name: "test"}, "media-1", nodes.StateDisabled); err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) *servertest.Response {
		req, _ := http.NewRequest(method, in.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+res.Credential)
		req.Header.Set("Content-Type", "application/json")
		return in.Do(t, in.Client(t), req)
	}
	r := call(http.MethodPost, "/api/v1/heartbeat", `{"load": 0, "version": "t"}`)
	var hb struct {
		AdminState string `json:"admin_state"`
	}
	if r.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.Body), &hb) != nil || hb.AdminState != nodes.StateDisabled {
		t.Fatalf("heartbeat of a disabled node: %d %s", r.StatusCode, r.Body)
	}
	if r := call(http.MethodGet, "/api/v1/assignments?wait=0s", ""); r.StatusCode != http.StatusForbidden {
		t.Fatalf("assignments of a disabled node: %d", r.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/api/v1/heartbeat", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer cpn_bogus.bogusbogusbogusbogusbogusbogusbogus")
	if r := in.Do(t, in.Client(t), req); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("heartbeat with a bad credential: %d", r.StatusCode)
	}
}

// Flap detection counts up<->down transitions only: a node that failed
// once is not held; at the limit it is held down with the hold's end
// shown, and an administrator can clear the hold (audited).
func TestFlapHoldCountsTransitionsAndAdminClearsIt(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	env.save(t, map[string]string{settings.KeyFlapLimit: "3", settings.KeyFlapWindow: "10m"})
	ep := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "media-1", nodes.KindMedia, ep.Address(), 10)
	addNode(t, in, "media-2", nodes.KindMedia, ep2.Address(), 10)
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	transitions := func() int {
		return queryInt(t, env.pool, "SELECT count(*) FROM health_transitions h JOIN nodes n ON n.id = h.node_id WHERE n.name = 'media-1'")
	}
	if n := transitions(); n != 0 {
		t.Fatalf("enrolment counted %d transitions", n)
	}
	_ = ep.Close()
	waitHealth(t, env.pool, "media-1", nodes.HealthDown)
	ep = probeEndpoint(t, probe.KindMedia, ep.Address())
	waitHealth(t, env.pool, "media-1", nodes.HealthUp) // failed once: not held
	if n := transitions(); n != 2 {
		t.Fatalf("%d transitions after one outage; want 2", n)
	}
	_ = ep.Close()
	waitHealth(t, env.pool, "media-1", nodes.HealthDown) // the third: held
	waitWithin(t, "the hold", 10*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM nodes WHERE name = 'media-1' AND flapping AND hold_until > now() + interval '9 minutes'") == 1
	})
	probeEndpoint(t, probe.KindMedia, ep.Address())
	var since time.Time
	_ = env.pool.QueryRow(context.Background(), "SELECT now()").Scan(&since)
	waitWithin(t, "passing probes while held", 20*time.Second, func() bool {
		return queryInt(t, env.pool, `SELECT count(*) FROM probe_results p JOIN nodes n ON n.id = p.node_id
			WHERE n.name = 'media-1' AND p.ok AND p.at > $1`, since) >= 5
	})
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthDown {
		t.Fatalf("held node is %s; want down", h)
	}
	admin := in.User(t, "admin@example.com", "admin")
	page := in.Get(t, admin, "/nodes/media-1")
	if !strings.Contains(page.Body, `data-testid="hold-until"`) || !strings.Contains(page.Body, `data-testid="clear-hold"`) {
		t.Fatal("node page does not show the hold's end and the clear button")
	}
	if r := in.HTMX(t, admin, http.MethodPost, "/nodes/media-1/hold/clear", url.Values{}); r.StatusCode != http.StatusOK {
		t.Fatalf("clear hold: %d %s", r.StatusCode, r.Body)
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM audit_log WHERE action = 'node.hold.clear' AND target = 'media-1' AND actor = 'admin@example.com'"); n != 1 {
		t.Fatalf("clear hold audited %d times", n)
	}
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	// Two outages, two recoveries alerted; none while it was held.
	var seq string
	waitWithin(t, "the recovery alert", 20*time.Second, func() bool {
		_ = env.pool.QueryRow(context.Background(), `SELECT string_agg(payload->>'to', ',' ORDER BY id) FROM alerts
			WHERE node_name = 'media-1' AND type = 'health'`).Scan(&seq)
		return seq == "down,up,down,up"
	})
}

// A node nobody enrolled stays pending however well its address answers,
// and gets no work; a second node on the same service socket is refused.
// Its agent's heartbeat and the probe together bring it up.
func TestNeverEnrolledNodeStaysPendingAndAddressesAreUnique(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	in.AddNode(t, "media-1", nodes.KindMedia, ep.Address(), 10)
	waitWithin(t, "passing probes", 20*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM probe_results WHERE ok") >= 4
	})
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthPending {
		t.Fatalf("never-enrolled node is %s; want pending", h)
	}
	p, err := in.Nodes().PlaceWork(context.Background(), nodes.Actor{Name: "test"}, nodes.WorkInput{Kind: nodes.WorkCall, Ref: "c1", Cost: 1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Node != "" {
		t.Fatalf("work placed on %q, a node nobody enrolled", p.Node)
	}
	ctx := context.Background()
	for _, addr := range []string{ep.Address(), "sip:" + ep.Address() + ";transport=udp"} {
		_, err := in.Nodes().AddNode(ctx, nodes.Actor{Name: "test"}, nodes.NodeInput{Name: "media-2", Kind: nodes.KindIVR, Address: addr, Capacity: "5"})
		var fe problem.FieldErrors
		if !errors.As(err, &fe) || !strings.Contains(fe["address"], "node media-1 already uses") {
			t.Fatalf("second node on %s: %v", addr, err)
		}
	}
	other := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in.AddNode(t, "media-2", nodes.KindMedia, other.Address(), 10)
	_, err = in.Nodes().UpdateNode(ctx, nodes.Actor{Name: "test"}, "media-2", nodes.NodeInput{Address: ep.Address(), Capacity: "10"})
	var fe problem.FieldErrors
	if !errors.As(err, &fe) || fe["address"] == "" {
		t.Fatalf("edit onto another node's address: %v", err)
	}
	runAgent(t, in, "media-1", agent.RunOptions{})
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	waitWithin(t, "the waiting call placed", 20*time.Second, func() bool { return liveWork(t, env.pool, "media-1") == 1 })
}

// A start hook that fails is retried by the agent with backoff, then
// reported with its error; the item goes to another node and never back,
// and one alert is mailed for the node.
func TestFailingStartHookBacksOffAndMovesTheWork(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	epA := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	epB := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	in.AddNode(t, "media-a", nodes.KindMedia, epA.Address(), 10)
	runAgent(t, in, "media-a", agent.RunOptions{HookRetry: 50 * time.Millisecond,
		OnAssign: `if [ "$CALLPLANE_ACTION" = start ]; then echo "$CALLPLANE_REF" >> ` + hookLog + `; echo "license server unreachable" >&2; exit 3; fi`})
	waitHealth(t, env.pool, "media-a", nodes.HealthUp)
	placeN(t, in, nodes.WorkCall, "call", 3) // all on media-a, the only node
	in.AddNode(t, "media-b", nodes.KindMedia, epB.Address(), 10)
	runAgent(t, in, "media-b", agent.RunOptions{})
	waitWithin(t, "the calls active on media-b", 60*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id WHERE n.name = 'media-b' AND w.state = 'active'") == 3
	})
	b, _ := os.ReadFile(hookLog)
	for i := range 3 {
		if got := strings.Count(string(b), fmt.Sprintf("call-%d\n", i)); got != 3 {
			t.Fatalf("start hook of call-%d ran %d times on media-a; want 3 (one try and two retries):\n%s", i, got, b)
		}
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM work WHERE epoch > 3"); n != 0 {
		t.Fatalf("%d items went round more than three times", n)
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM work WHERE last_error LIKE 'start failed on media-a: hook start failed%'"); n != 3 {
		t.Fatalf("%d items show why they failed", n)
	}
	if n := queryInt(t, env.pool, "SELECT count(*) FROM work_failures f JOIN nodes n ON n.id = f.node_id WHERE n.name = 'media-a'"); n != 3 {
		t.Fatalf("%d start failures recorded for media-a", n)
	}
	msgs := env.smtp.WaitMessages(t, 1, 30*time.Second)
	if !strings.Contains(msgs[0].Subject, "START FAILED") || !strings.Contains(msgs[0].Body, "media-a") {
		t.Fatalf("hook alert %q:\n%s", msgs[0].Subject, msgs[0].Body)
	}
	emailCountStays(t, env.smtp, 1)
	viewer := in.User(t, "viewer@example.com", "viewer")
	if page := in.Get(t, viewer, "/nodes/media-a"); !strings.Contains(page.Body, `data-testid="start-failures"`) || !strings.Contains(page.Body, "exit status 3") {
		t.Fatal("node page does not show the start failures")
	}
	if page := in.Get(t, viewer, "/work"); !strings.Contains(page.Body, `data-testid="work-last-error"`) {
		t.Fatal("work page does not show why the items failed to start")
	}
}

// Maintenance ending on a node that is still down sends the DOWN email it
// held back.
func TestMaintenanceEndingOnDownNodeSendsDown(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "ivr-1", nodes.KindIVR, ep1.Address(), 10)
	addNode(t, in, "ivr-2", nodes.KindIVR, ep2.Address(), 10)
	waitHealth(t, env.pool, "ivr-1", nodes.HealthUp)
	ctx := context.Background()
	win, err := in.Nodes().AddMaintenance(ctx, nodes.Actor{Name: "admin@example.com"}, "ivr-1",
		nodes.MaintenanceInput{End: time.Now().Add(time.Hour), Reason: "kernel upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	_ = ep1.Close()
	waitHealth(t, env.pool, "ivr-1", nodes.HealthDown)
	emailCountStays(t, env.smtp, 0)
	if _, err := in.Nodes().CancelMaintenance(ctx, nodes.Actor{Name: "admin@example.com"}, win.ID); err != nil {
		t.Fatal(err)
	}
	msgs := env.smtp.WaitMessages(t, 1, 30*time.Second)
	if !strings.Contains(msgs[0].Subject, "DOWN: ivr-1") || !strings.Contains(msgs[0].Body, "maintenance ended") {
		t.Fatalf("email after maintenance %q:\n%s", msgs[0].Subject, msgs[0].Body)
	}
	emailCountStays(t, env.smtp, 1)
}

// A manual-failover DOWN email says the work would wait unplaced when the
// other nodes have no room for it, as the portal's preview does.
func TestManualFailoverEmailSaysWhenThereIsNoRoom(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "ivr-1", nodes.KindIVR, ep1.Address(), 10)
	waitHealth(t, env.pool, "ivr-1", nodes.HealthUp)
	placeN(t, in, nodes.WorkIVR, "ivr", 5)
	addNode(t, in, "ivr-2", nodes.KindIVR, ep2.Address(), 2)
	waitHealth(t, env.pool, "ivr-2", nodes.HealthUp)
	_ = ep1.Close()
	msgs := env.smtp.WaitMessages(t, 1, 30*time.Second)
	body := msgs[0].Body
	for _, want := range []string{"DOWN: ivr-1", "waiting unplaced", "do not have room"} {
		if !strings.Contains(msgs[0].Subject+body, want) {
			t.Errorf("manual no-room email lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "its work then moves to the remaining active") {
		t.Errorf("manual no-room email promises the work moves:\n%s", body)
	}
}

// Every page's footer shows the checker's last round, /readyz reports it,
// and a banner appears when no checker has run a round recently.
func TestCheckerStatusInFooterReadyzAndBanner(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	in := env.start(t, "cm-a")
	waitWithin(t, "a checker round", 20*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM checker_status WHERE round_at IS NOT NULL AND holder = 'cm-a'") == 1
	})
	viewer := in.User(t, "viewer@example.com", "viewer")
	page := in.Get(t, viewer, "/")
	if got, ok := servertest.TestID(page.Body, "checker-last-round"); !ok || !strings.HasSuffix(got, "ago") {
		t.Fatalf("footer checker round %q", got)
	}
	if strings.Contains(page.Body, `data-testid="checker-banner"`) {
		t.Fatal("stall banner while the checker runs")
	}
	var ready struct {
		Checker struct {
			Leader  string   `json:"leader"`
			Stalled bool     `json:"stalled"`
			Age     *float64 `json:"last_round_age_s"`
		} `json:"checker"`
	}
	r := in.Get(t, in.Client(t), "/readyz")
	if err := json.Unmarshal([]byte(r.Body), &ready); err != nil || ready.Checker.Leader != "cm-a" || ready.Checker.Stalled || ready.Checker.Age == nil {
		t.Fatalf("/readyz: %s (%v)", r.Body, err)
	}
	// The leader stops: nothing records rounds. Simulate the time passing
	// by ageing the record beyond the stall bound.
	in.Stop()
	ctx := context.Background()
	if _, err := env.pool.Exec(ctx, "UPDATE settings SET value = '1h' WHERE key = 'probe_interval'"); err != nil {
		t.Fatal(err)
	}
	b := env.start(t, "cm-b-idle")
	waitWithin(t, "cm-b's checker to start", 20*time.Second, func() bool {
		return queryInt(t, env.pool, "SELECT count(*) FROM checker_status WHERE holder = 'cm-b-idle'") == 1
	})
	if _, err := env.pool.Exec(ctx, "UPDATE checker_status SET started_at = now() - interval '11 hours', round_at = now() - interval '11 hours'"); err != nil {
		t.Fatal(err)
	}
	waitWithin(t, "the stall banner", 20*time.Second, func() bool {
		p := b.Get(t, b.User(t, fmt.Sprintf("v%d@example.com", time.Now().UnixNano()), "viewer"), "/work")
		return strings.Contains(p.Body, `data-testid="checker-banner"`)
	})
	r = b.Get(t, b.Client(t), "/readyz")
	if err := json.Unmarshal([]byte(r.Body), &ready); err != nil || !ready.Checker.Stalled {
		t.Fatalf("/readyz does not report the stall: %s", r.Body)
	}
}

// A leader whose checker cannot complete a round steps down within the
// bound, so the lease goes to a checker that can.
func TestStalledCheckerStepsDown(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	// Every round blocks on its first read (the node list), holding no
	// lock on the lease: the lease renews fine, only the checker is stuck.
	tx, err := env.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	lead := server.NewLeader(env.pool, "cm-stuck", 3*time.Second, log)
	lctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	svc := nodes.NewService(env.pool, log)
	store := health.NewStore(svc, env.pool, settings.Defaults{}, "", log)
	chk := health.NewChecker(svc, store, lead, log)
	go lead.Run(lctx)
	go lead.WhileLeading(lctx, chk.Run)
	var first int64
	waitWithin(t, "leadership", 10*time.Second, func() bool { var ok bool; first, ok = lead.Epoch(); return ok })
	st, _ := store.Load(ctx)
	start := time.Now()
	waitWithin(t, "the stuck leader to step down and take a new lease", st.StallAfter()+30*time.Second, func() bool {
		e, ok := lead.Epoch()
		return ok && e > first
	})
	if took := time.Since(start); took < st.StallAfter()-time.Second {
		t.Fatalf("stepped down after %s; the bound is %s", took, st.StallAfter())
	}
	_ = tx.Rollback(ctx)
	waitWithin(t, "a round with the new epoch", 30*time.Second, func() bool {
		e, _ := lead.Epoch()
		return queryInt(t, env.pool, "SELECT count(*) FROM checker_status WHERE round_at IS NOT NULL AND epoch = $1", e) == 1
	})
}
