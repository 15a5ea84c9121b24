package agent_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/e2e/faultproxy"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// heartbeatStale is the checker's default heartbeat stale time (three
// one-second beats): an agent that moves to another call manager must
// report again before its node's heartbeat is this old.
const heartbeatStale = 3 * time.Second

// haCluster is two real call manager instances on one database, serving
// one key, each reached by agents through its own fault proxy.
type haCluster struct {
	a, b   *servertest.Instance
	pa, pb *faultproxy.Proxy
	dbURL  string
}

func startHA(t *testing.T) *haCluster {
	t.Helper()
	fp := faultproxy.New()
	t.Cleanup(func() { fp.Close() })
	dbURL := dbtest.URL(t)
	addrA, addrB := freeAddr(t), freeAddr(t)
	pa, err := fp.Proxy("cm-a", addrA)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := fp.Proxy("cm-b", addrB)
	if err != nil {
		t.Fatal(err)
	}
	var keyDir string
	// Probing is off: this is about the agent's connection, and the test
	// sets the node's health itself.
	a := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, InstanceID: "cm-a", Settings: servertest.NoProbes,
		Configure: func(c *server.Config) {
			c.Listen, c.PublicURL, keyDir = addrA, "https://"+pa.Addr, c.DataDir
		}})
	// B starts once A has advertised itself, so that B's join command
	// lists A from the start.
	waitUntil(t, 30*time.Second, "A's advert", func() bool {
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var n int
		_ = conn.QueryRow(context.Background(), "SELECT count(*) FROM settings WHERE key = 'instance:cm-a'").Scan(&n)
		return n == 1
	})
	// The instances serve one key, as agents with one pin require.
	b := servertest.Start(t, servertest.Options{DatabaseURL: dbURL, InstanceID: "cm-b",
		Configure: func(c *server.Config) {
			c.Listen, c.PublicURL = addrB, "https://"+pb.Addr
			c.TLSCert, c.TLSKey = filepath.Join(keyDir, "tls", "cert.pem"), filepath.Join(keyDir, "tls", "key.pem")
		}})
	if a.Pin() != b.Pin() {
		t.Fatalf("instances serve different keys: %s, %s", a.Pin(), b.Pin())
	}
	return &haCluster{a: a, b: b, pa: pa, pb: pb, dbURL: dbURL}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runAgent enrols node m1 with the servers of the join command and runs
// the agent until the test ends.
func (h *haCluster) runAgent(t *testing.T, servers string) (stateDir string, logs *syncBuffer) {
	return h.runAgentPolling(t, servers, 5*time.Second)
}

// runAgentPolling is runAgent with the agent's long-poll (or stream) wait.
func (h *haCluster) runAgentPolling(t *testing.T, servers string, pollWait time.Duration) (stateDir string, logs *syncBuffer) {
	t.Helper()
	return h.runAgentWith(t, servers, pollWait, nil)
}

// runAgentWith is runAgentPolling with tweak applied to the agent's options.
func (h *haCluster) runAgentWith(t *testing.T, servers string, pollWait time.Duration, tweak func(*agent.RunOptions)) (stateDir string, logs *syncBuffer) {
	t.Helper()
	ctx := context.Background()
	h.a.AddNode(t, "m1", "media", "127.0.0.1:5999", 100)
	jt, err := h.a.Nodes().CreateJoinToken(ctx, nodes.Actor{Name: "test"}, "m1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stateDir = filepath.Join(t.TempDir(), "agent")
	if _, err := agent.Join(ctx, agent.JoinOptions{Servers: []string{servers}, Token: jt.Token, CAPin: h.a.Pin(), StateDir: stateDir, Version: "test"}); err != nil {
		t.Fatalf("join: %v", err)
	}
	h.exec(t, "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())")
	logs = &syncBuffer{}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	opts := agent.RunOptions{StateDir: stateDir, Version: "test", PollWait: pollWait,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if tweak != nil {
		tweak(&opts)
	}
	go func() { done <- agent.Run(rctx, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
	})
	return stateDir, logs
}

func (h *haCluster) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), h.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// heartbeatAge is how long ago the node's last heartbeat was stored.
func (h *haCluster) heartbeatAge(t *testing.T) time.Duration {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), h.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var secs float64
	if err := conn.QueryRow(context.Background(),
		"SELECT coalesce(extract(epoch FROM clock_timestamp() - last_heartbeat_at), 1e9) FROM nodes WHERE name = 'm1'").Scan(&secs); err != nil {
		t.Fatal(err)
	}
	return time.Duration(secs * float64(time.Second))
}

// placeActive places a call and waits until the agent acked it active,
// which needs a working long poll and ack.
func (h *haCluster) placeActive(t *testing.T, ref string) {
	t.Helper()
	if _, err := h.a.Nodes().PlaceWork(context.Background(), nodes.Actor{Name: "test"}, nodes.WorkInput{Kind: "call", Ref: ref, Cost: 1}); err != nil {
		t.Fatalf("place %s: %v", ref, err)
	}
	h.waitActive(t, ref)
}

// waitActive waits until the work ref is active.
func (h *haCluster) waitActive(t *testing.T, ref string) {
	t.Helper()
	waitUntil(t, 30*time.Second, ref+" active on m1", func() bool {
		conn, err := pgx.Connect(context.Background(), h.dbURL)
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		var state string
		_ = conn.QueryRow(context.Background(), "SELECT state FROM work WHERE ref = $1", ref).Scan(&state)
		return state == "active"
	})
}

// watchHeartbeats samples the node's heartbeat age for d and returns the
// largest seen.
func (h *haCluster) watchHeartbeats(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	var worst time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		worst = max(worst, h.heartbeatAge(t))
	}
	return worst
}

// The join command lists both call managers; when the one the agent uses
// is paused (its connections accepted, nothing answered) the agent moves
// to the other within a heartbeat interval and keeps heartbeating and
// long-polling there; when that one is then stopped, it moves back.
func TestRunMovesToAnotherCallManager(t *testing.T) {
	h := startHA(t)
	want := "https://" + h.pb.Addr + ",https://" + h.pa.Addr
	waitUntil(t, 30*time.Second, "B's join command to list "+want+" (this instance first, then the other)", func() bool {
		return h.b.JoinServer() == want
	})
	// Try the first instance first: put A first.
	stateDir, logs := h.runAgent(t, "https://"+h.pa.Addr+",https://"+h.pb.Addr)
	st, err := agent.Load(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Servers, []string{"https://" + h.pa.Addr, "https://" + h.pb.Addr}) {
		t.Fatalf("state dir stores servers %q, want both", st.Servers)
	}
	h.placeActive(t, "call-1")

	// Pause A as its agents see it.
	if err := h.pa.Freeze(); err != nil {
		t.Fatal(err)
	}
	worst := h.watchHeartbeats(t, 5*time.Second)
	t.Logf("A paused: oldest heartbeat seen %v", worst.Round(time.Millisecond))
	if worst >= heartbeatStale {
		t.Fatalf("heartbeat was %v old while A was paused; the agent must move to B within the stale time (%v)\n%s", worst, heartbeatStale, logs)
	}
	if !strings.Contains(logs.String(), `to=https://`+h.pb.Addr) {
		t.Fatalf("agent did not log its move to B:\n%s", logs)
	}
	h.placeActive(t, "call-2") // delivered by B's long poll

	// A answers again; B stops for good.
	if err := h.pa.Thaw(); err != nil {
		t.Fatal(err)
	}
	h.b.Stop()
	worst = h.watchHeartbeats(t, 5*time.Second)
	t.Logf("B stopped: oldest heartbeat seen %v", worst.Round(time.Millisecond))
	if worst >= heartbeatStale {
		t.Fatalf("heartbeat was %v old after B stopped; the agent must move to A within the stale time\n%s", worst, logs)
	}
	h.placeActive(t, "call-3")
}

// nodeagent run --server replaces the stored list: an agent joined with one
// call manager is pointed at both without a new token.
func TestRunServersReplaceStoredList(t *testing.T) {
	h := startHA(t)
	ctx := context.Background()
	h.a.AddNode(t, "m1", "media", "127.0.0.1:5999", 100)
	jt, err := h.a.Nodes().CreateJoinToken(ctx, nodes.Actor{Name: "test"}, "m1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	if _, err := agent.Join(ctx, agent.JoinOptions{Servers: []string{"https://" + h.pa.Addr}, Token: jt.Token, CAPin: h.a.Pin(), StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	h.pa.Down() // only B answers now
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(rctx, agent.RunOptions{StateDir: dir, Servers: []string{"https://" + h.pa.Addr, "https://" + h.pb.Addr}})
	}()
	waitUntil(t, 30*time.Second, "a heartbeat through B", func() bool { return h.heartbeatAge(t) < time.Hour })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := agent.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Servers, []string{"https://" + h.pa.Addr, "https://" + h.pb.Addr}) {
		t.Fatalf("stored servers = %q, want the list given to run", st.Servers)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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
