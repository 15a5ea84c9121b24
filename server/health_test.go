package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/nodes/alert/smtptest"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

// healthEnv is a database with fast health settings saved, and a mail sink.
type healthEnv struct {
	dbURL string
	pool  *pgxpool.Pool
	smtp  *smtptest.Server
}

// setupHealth creates a database whose saved settings probe every 200 ms
// (timeout 150 ms, N=2, M=2) and mail the smtptest server.
func setupHealth(t *testing.T) *healthEnv {
	t.Helper()
	env := &healthEnv{dbURL: dbtest.URL(t), smtp: smtptest.Start(t)}
	pool, err := db.Open(context.Background(), env.dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	env.pool = pool
	v := settings.Builtin().Values()
	v[settings.KeyProbeInterval] = "200ms"
	v[settings.KeyProbeTimeout] = "150ms"
	v[settings.KeyFailThreshold] = "2"
	v[settings.KeyRecoverThreshold] = "2"
	v[settings.KeyFlapLimit] = "100"
	v[settings.KeySMTPURL] = env.smtp.URL()
	v[settings.KeyAlertFrom] = "Callplane <alerts@example.com>"
	v[settings.KeyAlertTo] = "ops@example.com"
	store := settings.NewStore(pool, settings.Defaults{}, "https://portal.example", nil)
	if _, err := store.Save(context.Background(), nodes.Actor{Name: "test"}, v); err != nil {
		t.Fatalf("save settings: %v", err)
	}
	return env
}

func (env *healthEnv) start(t *testing.T, id string) *servertest.Instance {
	t.Helper()
	return servertest.Start(t, servertest.Options{DatabaseURL: env.dbURL, InstanceID: id})
}

// runAgent enrols a real agent for node name against instance in and runs
// it (heartbeats, long-polls, acks) until the test ends or stop is called.
// A node comes up only when its probe and its agent agree.
func runAgent(t *testing.T, in *servertest.Instance, name string, opts agent.RunOptions) (stop func()) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "agent-"+name)
	jt := joinToken(t, in, name, time.Hour)
	if _, err := agent.Join(context.Background(), agent.JoinOptions{Servers: []string{in.URL}, Token: jt.Token, CAPin: in.Pin(), StateDir: dir, Version: "test"}); err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	opts.StateDir, opts.Version = dir, "test"
	if opts.PollWait == 0 {
		opts.PollWait = 2 * time.Second
	}
	opts.MinBackoff, opts.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, opts) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// addNodes registers nodes on probe endpoints, each with a running agent.
func addNode(t *testing.T, in *servertest.Instance, name, kind, address string, capacity int) (stopAgent func()) {
	t.Helper()
	in.AddNode(t, name, kind, address, capacity)
	return runAgent(t, in, name, agent.RunOptions{})
}

func probeEndpoint(t *testing.T, kind, listen string) *probe.Endpoint {
	t.Helper()
	var ep *probe.Endpoint
	var err error
	// A port just closed may take a moment to be free again.
	for range 40 {
		if ep, err = probe.NewEndpoint(context.Background(), kind, listen); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("probe endpoint %s on %s: %v", kind, listen, err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	return ep
}

func waitWithin(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func nodeHealth(t *testing.T, pool *pgxpool.Pool, name string) string {
	t.Helper()
	var h string
	if err := pool.QueryRow(context.Background(), "SELECT health FROM nodes WHERE name = $1", name).Scan(&h); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	return h
}

func waitHealth(t *testing.T, pool *pgxpool.Pool, name, want string) {
	t.Helper()
	waitWithin(t, name+" "+want, 10*time.Second, func() bool { return nodeHealth(t, pool, name) == want })
}

func liveWork(t *testing.T, pool *pgxpool.Pool, name string) int {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(), `SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id
		WHERE n.name = $1 AND w.state IN ('assigned', 'active')`, name).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func placeN(t *testing.T, in *servertest.Instance, kind, prefix string, n int) {
	t.Helper()
	for i := range n {
		if _, err := in.Nodes().PlaceWork(context.Background(), nodes.Actor{Name: "test"},
			nodes.WorkInput{Kind: kind, Ref: fmt.Sprintf("%s-%d", prefix, i), Cost: 1}); err != nil {
			t.Fatalf("place %s: %v", kind, err)
		}
	}
}

func eventMessages(t *testing.T, pool *pgxpool.Pool, node string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT type || ': ' || message FROM events WHERE node_name = $1 ORDER BY id", node)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// waitChain waits until a node's events contain the given fragments in
// order (the mailer commits its "sent" event just after the SMTP server
// has the message).
func waitChain(t *testing.T, pool *pgxpool.Pool, node string, fragments ...string) {
	t.Helper()
	var events []string
	missing := func() int {
		events = eventMessages(t, pool, node)
		i := 0
		for _, e := range events {
			if i < len(fragments) && strings.Contains(e, fragments[i]) {
				i++
			}
		}
		return i
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		i := missing()
		if i == len(fragments) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("event chain: missing %q after %q in\n%s", fragments[i], fragments[:i], strings.Join(events, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alertStates(t *testing.T, pool *pgxpool.Pool) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT state, count(*)::int FROM alerts WHERE type = 'health' GROUP BY state")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	return out
}

// stillCount checks that no further message arrives for a while.
func emailCountStays(t *testing.T, s *smtptest.Server, want int) {
	t.Helper()
	time.Sleep(2500 * time.Millisecond)
	if got := s.Messages(); len(got) != want {
		var subjects []string
		for _, m := range got {
			subjects = append(subjects, m.Subject)
		}
		t.Fatalf("got %d emails, want %d: %q", len(got), want, subjects)
	}
}

func TestMediaNodeDownFailsOverAndRecovers(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "media-1", nodes.KindMedia, ep1.Address(), 20)
	addNode(t, in, "media-2", nodes.KindMedia, ep2.Address(), 20)
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	waitHealth(t, env.pool, "media-2", nodes.HealthUp)

	placeN(t, in, nodes.WorkCall, "call", 8)
	onFirst := liveWork(t, env.pool, "media-1")
	if onFirst == 0 {
		t.Fatal("no call placed on media-1")
	}

	_ = ep1.Close()
	waitHealth(t, env.pool, "media-1", nodes.HealthDown)
	waitWithin(t, "calls moved off media-1", 5*time.Second, func() bool { return liveWork(t, env.pool, "media-1") == 0 })
	if got := liveWork(t, env.pool, "media-2"); got != 8 {
		t.Fatalf("media-2 carries %d calls; want 8", got)
	}

	msgs := env.smtp.WaitMessages(t, 1, 10*time.Second)
	down := msgs[0]
	if !strings.Contains(down.Subject, "DOWN: media-1 (media)") {
		t.Fatalf("down email subject %q", down.Subject)
	}
	for _, want := range []string{ep1.Address(), "SIP OPTIONS", fmt.Sprintf("%d calls moved to media-2 (%d)", onFirst, onFirst), "automatic"} {
		if !strings.Contains(down.Body, want) {
			t.Errorf("down email lacks %q:\n%s", want, down.Body)
		}
	}
	waitChain(t, env.pool, "media-1",
		"health: Node media-1 is suspect", "health: Node media-1 is down", "move: Work moved off media-1",
		"alert: Alert email queued", "alert: Alert email sent")

	// The endpoint comes back on the same address.
	probeEndpoint(t, probe.KindMedia, ep1.Address())
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	msgs = env.smtp.WaitMessages(t, 2, 10*time.Second)
	rec := msgs[1]
	if !strings.Contains(rec.Subject, "RECOVERED: media-1 (media) after") || !strings.Contains(rec.Body, "Downtime:") {
		t.Fatalf("recovery email %q:\n%s", rec.Subject, rec.Body)
	}
	waitChain(t, env.pool, "media-1", "health: Node media-1 recovered after")
	emailCountStays(t, env.smtp, 2)
	if st := alertStates(t, env.pool); st["sent"] != 2 || st["pending"] != 0 {
		t.Fatalf("alert states %v", st)
	}
}

func TestIVRManualFailoverWaitsForAdmin(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "ivr-1", nodes.KindIVR, ep1.Address(), 10)
	addNode(t, in, "ivr-2", nodes.KindIVR, ep2.Address(), 10)
	waitHealth(t, env.pool, "ivr-1", nodes.HealthUp)
	waitHealth(t, env.pool, "ivr-2", nodes.HealthUp)
	placeN(t, in, nodes.WorkIVR, "ivr", 4)
	before := liveWork(t, env.pool, "ivr-1")
	if before == 0 {
		t.Fatal("no IVR placed on ivr-1")
	}

	_ = ep1.Close()
	waitHealth(t, env.pool, "ivr-1", nodes.HealthDown)
	msgs := env.smtp.WaitMessages(t, 1, 10*time.Second)
	body := msgs[0].Body
	for _, want := range []string{"DOWN", "manual", "disable the node", "stay on the node until an administrator disables it"} {
		if !strings.Contains(msgs[0].Subject+body, want) {
			t.Errorf("manual down email lacks %q:\n%s", want, body)
		}
	}
	time.Sleep(time.Second)
	if got := liveWork(t, env.pool, "ivr-1"); got != before {
		t.Fatalf("manual policy: ivr-1 carries %d IVRs after going down; want %d still", got, before)
	}

	if _, _, err := in.Nodes().SetAdminState(context.Background(), nodes.Actor{Name: "admin@example.com"}, "ivr-1", nodes.StateDisabled); err != nil {
		t.Fatal(err)
	}
	if got := liveWork(t, env.pool, "ivr-1"); got != 0 {
		t.Fatalf("ivr-1 still carries %d IVRs after disable", got)
	}
	if got := liveWork(t, env.pool, "ivr-2"); got != 4 {
		t.Fatalf("ivr-2 carries %d IVRs; want 4", got)
	}
	waitChain(t, env.pool, "ivr-1",
		"health: Node ivr-1 is down", "alert: Alert email queued", "alert: Alert email sent", "admin: Node ivr-1 disabled", "move: Work moved off ivr-1")
}

func TestMeetingAndIMNodesComeUp(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	meet := probeEndpoint(t, probe.KindMeeting, "127.0.0.1:0")
	im := probeEndpoint(t, probe.KindIM, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "meet-1", nodes.KindMeeting, meet.Address(), 5)
	addNode(t, in, "im-1", nodes.KindIM, im.Address(), 5)
	waitHealth(t, env.pool, "meet-1", nodes.HealthUp)
	waitHealth(t, env.pool, "im-1", nodes.HealthUp)
	var detail string
	if err := env.pool.QueryRow(context.Background(), "SELECT last_probe_detail FROM nodes WHERE name = 'meet-1'").Scan(&detail); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(detail, "WebRTC echo") {
		t.Errorf("meeting probe detail %q", detail)
	}
}

func TestGarbageSIPPeerCountsAsFailure(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			_, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = conn.WriteTo([]byte("SIP/2.0 200 OK\r\ngarbage\x00\xff\r\n\r\n"), from)
		}
	})
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	in := env.start(t, "cm-a")
	in.AddNode(t, "media-g", nodes.KindMedia, conn.LocalAddr().String(), 5)
	waitWithin(t, "failed probes recorded", 10*time.Second, func() bool {
		var n int
		_ = env.pool.QueryRow(context.Background(), `SELECT count(*) FROM probe_results p JOIN nodes n ON n.id = p.node_id
			WHERE n.name = 'media-g' AND NOT p.ok`).Scan(&n)
		return n >= 3
	})
	if h := nodeHealth(t, env.pool, "media-g"); h != nodes.HealthPending {
		t.Fatalf("garbage peer: health %s; want pending", h)
	}
	if r := in.Get(t, in.Client(t), "/healthz"); r.StatusCode != 200 {
		t.Fatalf("instance unhealthy after garbage peer: %d", r.StatusCode)
	}
}

func TestAlertsSurviveSMTPOutageAndErrors(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	var eps []*probe.Endpoint
	in := env.start(t, "cm-a")
	for i := range 3 {
		ep := probeEndpoint(t, probe.KindQueue, "127.0.0.1:0")
		eps = append(eps, ep)
		addNode(t, in, fmt.Sprintf("queue-%d", i), nodes.KindQueue, ep.Address(), 5)
	}
	for i := range 3 {
		waitHealth(t, env.pool, fmt.Sprintf("queue-%d", i), nodes.HealthUp)
	}

	// SMTP down: the alert waits and is retried, then delivered once.
	env.smtp.Stop()
	_ = eps[0].Close()
	waitHealth(t, env.pool, "queue-0", nodes.HealthDown)
	waitWithin(t, "a failed send attempt", 10*time.Second, func() bool {
		var attempts int
		var lastErr string
		_ = env.pool.QueryRow(context.Background(), "SELECT attempts, last_error FROM alerts WHERE node_name = 'queue-0'").Scan(&attempts, &lastErr)
		return attempts >= 1 && lastErr != ""
	})
	env.smtp.Restart()
	msgs := env.smtp.WaitMessages(t, 1, 15*time.Second)
	if !strings.Contains(msgs[0].Subject, "DOWN: queue-0") {
		t.Fatalf("after outage: %q", msgs[0].Subject)
	}

	// A 451 is retried and the alert sent once.
	env.smtp.FailNext(451, "try again later", 1)
	_ = eps[1].Close()
	msgs = env.smtp.WaitMessages(t, 2, 15*time.Second)
	if !strings.Contains(msgs[1].Subject, "DOWN: queue-1") {
		t.Fatalf("after 451: %q", msgs[1].Subject)
	}
	var attempts int
	waitWithin(t, "the queue-1 alert marked sent", 5*time.Second, func() bool {
		var state string
		_ = env.pool.QueryRow(context.Background(), "SELECT state, attempts FROM alerts WHERE node_name = 'queue-1'").Scan(&state, &attempts)
		return state == "sent"
	})
	if attempts != 2 {
		t.Fatalf("queue-1 alert sent after %d attempts; want 2", attempts)
	}

	// A 550 marks the alert failed, visible on the settings page.
	env.smtp.FailNext(550, "mailbox unavailable", 1)
	_ = eps[2].Close()
	waitWithin(t, "the alert marked failed", 10*time.Second, func() bool { return alertStates(t, env.pool)["failed"] == 1 })
	emailCountStays(t, env.smtp, 2)
	if st := alertStates(t, env.pool); st["sent"] != 2 || st["pending"] != 0 {
		t.Fatalf("alert states %v", st)
	}
	viewer := in.User(t, "viewer@example.com", "viewer")
	page := in.Get(t, viewer, "/settings")
	if !strings.Contains(page.Body, `data-testid="outbox-failed"`) || !strings.Contains(page.Body, "mailbox unavailable") {
		t.Fatalf("settings page does not show the failed alert:\n%s", page.Body)
	}
	waitChain(t, env.pool, "queue-2", "alert: Alert email failed permanently")
}

func TestTwoInstancesOneLeaderOneEmail(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	a := env.start(t, "cm-a")
	b := env.start(t, "cm-b")
	a.AddNode(t, "media-1", nodes.KindMedia, ep.Address(), 5)
	ctx := context.Background()
	waitWithin(t, "a leader", 10*time.Second, func() bool { return a.LeaderID(ctx) != "" })
	leaderID := a.LeaderID(ctx)
	if b.LeaderID(ctx) != leaderID {
		t.Fatalf("instances disagree on the leader: %q vs %q", leaderID, b.LeaderID(ctx))
	}
	_, aLeads := a.Leader().Epoch()
	_, bLeads := b.Leader().Epoch()
	if aLeads == bLeads {
		t.Fatalf("leading: a=%v b=%v; want exactly one", aLeads, bLeads)
	}
	leader, other := a, b
	if bLeads {
		leader, other = b, a
	}
	// The agent talks to the instance that stays.
	runAgent(t, other, "media-1", agent.RunOptions{})
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	_ = ep.Close()
	waitHealth(t, env.pool, "media-1", nodes.HealthDown)
	env.smtp.WaitMessages(t, 1, 10*time.Second)

	leader.Stop()
	waitWithin(t, "the other instance to lead", 5*time.Second, func() bool {
		_, ok := other.Leader().Epoch()
		return ok
	})
	if got := other.LeaderID(ctx); got != other.InstanceID() {
		t.Fatalf("leader is %q; want %q", got, other.InstanceID())
	}
	probeEndpoint(t, probe.KindMedia, ep.Address())
	waitHealth(t, env.pool, "media-1", nodes.HealthUp)
	msgs := env.smtp.WaitMessages(t, 2, 10*time.Second)
	if !strings.Contains(msgs[1].Subject, "RECOVERED: media-1") {
		t.Fatalf("second email %q", msgs[1].Subject)
	}
	emailCountStays(t, env.smtp, 2)
	if st := alertStates(t, env.pool); st["sent"] != 2 || len(st) != 1 {
		t.Fatalf("alert states %v", st)
	}
}

func TestPausedExLeaderWriteIsIgnored(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	ep := probeEndpoint(t, probe.KindMedia, "127.0.0.1:0")
	svc := nodes.NewService(env.pool, log)
	if _, err := svc.AddNode(ctx, nodes.Actor{Name: "test"}, nodes.NodeInput{Name: "media-1", Kind: nodes.KindMedia, Address: ep.Address(), Capacity: "5"}); err != nil {
		t.Fatal(err)
	}

	old := server.NewLeader(env.pool, "cm-old", 2*time.Second, log)
	octx, stopOld := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); old.Run(octx) }()
	var e1 int64
	waitWithin(t, "cm-old to lead", 5*time.Second, func() bool {
		var ok bool
		e1, ok = old.Epoch()
		return ok
	})
	// cm-old pauses: it stops renewing and its lease expires.
	stopOld()
	<-done
	if _, err := env.pool.Exec(ctx, "UPDATE leader_lease SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	next := server.NewLeader(env.pool, "cm-new", 2*time.Second, log)
	nctx, stopNew := context.WithCancel(ctx)
	t.Cleanup(stopNew)
	go next.Run(nctx)
	waitWithin(t, "cm-new to lead", 5*time.Second, func() bool { e, ok := next.Epoch(); return ok && e > e1 })

	// A direct write fenced with the old epoch.
	err := db.InTx(ctx, env.pool, func(tx pgx.Tx) error {
		if err := old.Fence(ctx, tx, e1); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE nodes SET health = 'down' WHERE name = 'media-1'")
		return err
	})
	if !errors.Is(err, nodes.ErrNotLeader) {
		t.Fatalf("fenced write with the old epoch: %v; want ErrNotLeader", err)
	}
	// A whole checker round with the old epoch writes nothing.
	store := health.NewStore(svc, env.pool, settings.Defaults{}, "", log)
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := health.NewChecker(svc, store, old, log).Round(ctx, e1, st); !errors.Is(err, nodes.ErrNotLeader) {
		t.Fatalf("checker round with the old epoch: %v; want ErrNotLeader", err)
	}
	var results int
	if err := env.pool.QueryRow(ctx, "SELECT count(*) FROM probe_results").Scan(&results); err != nil {
		t.Fatal(err)
	}
	if h := nodeHealth(t, env.pool, "media-1"); h != nodes.HealthPending || results != 0 {
		t.Fatalf("ex-leader changed state: health %s, %d probe results", h, results)
	}
	// The current leader's round does write.
	e2, _ := next.Epoch()
	if err := health.NewChecker(svc, store, next, log).Round(ctx, e2, st); err != nil {
		t.Fatalf("leader round: %v", err)
	}
	if err := env.pool.QueryRow(ctx, "SELECT count(*) FROM probe_results").Scan(&results); err != nil || results != 1 {
		t.Fatalf("leader round wrote %d probe results (%v)", results, err)
	}
}

// A node still down with work it should not keep — here because an
// administrator switched its kind to automatic failover after it failed —
// has that work moved by the checker's next round.
func TestStillDownNodeFailsOverWhenPolicyTurnsAuto(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindQueue, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindQueue, "127.0.0.1:0")
	in := env.start(t, "cm-a")
	addNode(t, in, "queue-1", nodes.KindQueue, ep1.Address(), 10)
	addNode(t, in, "queue-2", nodes.KindQueue, ep2.Address(), 10)
	waitHealth(t, env.pool, "queue-1", nodes.HealthUp)
	waitHealth(t, env.pool, "queue-2", nodes.HealthUp)
	placeN(t, in, nodes.WorkQueue, "q", 4)
	stuck := liveWork(t, env.pool, "queue-1")
	if stuck == 0 {
		t.Fatal("no queue placed on queue-1")
	}
	_ = ep1.Close()
	waitHealth(t, env.pool, "queue-1", nodes.HealthDown)
	if got := liveWork(t, env.pool, "queue-1"); got != stuck {
		t.Fatalf("manual policy moved work: %d left of %d", got, stuck)
	}
	store := settings.NewStore(env.pool, settings.Defaults{}, "https://portal.example", nil)
	cur, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v := cur.Values()
	v[settings.PolicyKey(nodes.KindQueue)] = settings.PolicyAuto
	if _, err := store.Save(context.Background(), nodes.Actor{Name: "admin@example.com"}, v); err != nil {
		t.Fatal(err)
	}
	waitWithin(t, "queue-1's work moved", 10*time.Second, func() bool { return liveWork(t, env.pool, "queue-1") == 0 })
	if got := liveWork(t, env.pool, "queue-2"); got != 4 {
		t.Fatalf("queue-2 carries %d queues; want 4", got)
	}
	waitChain(t, env.pool, "queue-1", "health: Node queue-1 is down", "move: Work moved off queue-1 (node still down (automatic failover))")
}
