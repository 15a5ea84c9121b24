package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/server/metrics"
	"github.com/callplane/callplane/server/servertest"
)

// counters sums the counters of this process's call managers named
// name, by the labels key names, joined by a space.
func counters(t *testing.T, name string, key ...string) map[string]float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			var k []string
			for _, n := range key {
				k = append(k, labels[n])
			}
			out[strings.Join(k, " ")] += m.GetCounter().GetValue()
		}
	}
	return out
}

// agentRequests counts the agent API requests the call managers of this
// process have finished, by method and route: what reached the server.
func agentRequests(t *testing.T) map[string]float64 {
	return counters(t, "callplane_http_requests_total", "method", "route")
}

// ackCounts reads metrics.AgentAcks: the acks the call managers of this
// process received, by how they came.
func ackCounts(t *testing.T) map[string]float64 {
	return counters(t, "callplane_agent_acks_total", "via")
}

// nodeagent takes its deliveries from a call manager that streams them on
// one open request: placements one after another go active with every ack
// on the stream's body or a heartbeat, none in a request of its own, the
// first (after a quiet spell) on the stream; and fewer streams end than
// deliveries arrive (a long-poll ends with each).
func TestRunStreamsDeliveriesAndAcksOnTheStream(t *testing.T) {
	url := dbtest.URL(t)
	h := &haCluster{a: servertest.Start(t, servertest.Options{DatabaseURL: url, Settings: servertest.NoProbes}), dbURL: url}
	// The stream stays open at most this long: far longer than the
	// placements below take on any machine that runs the suite.
	const wait = time.Minute
	acksBefore := ackCounts(t)
	_, logs := h.runAgentPolling(t, h.a.URL, wait)
	h.placeActive(t, "warm-up")
	before := agentRequests(t)
	const deliveries = 3
	for i := range deliveries {
		h.placeActive(t, fmt.Sprintf("call-%d", i))
	}
	after, acksAfter := agentRequests(t), ackCounts(t)
	diff := func(key string) float64 { return after[key] - before[key] }
	if n := diff("GET /api/v1/assignments") + diff("POST /api/v1/assignments"); n >= deliveries {
		t.Fatalf("%v long-polls ended for %d deliveries: the agent did not stream\n%s", n, deliveries, logs)
	}
	for _, key := range []string{"POST /api/v1/assignments/ack", "POST /api/v1/assignments/{id}/ack"} {
		if n := diff(key); n != 0 {
			t.Fatalf("%v requests %s: acks must ride the stream or the heartbeats\n%s", n, key, logs)
		}
	}
	acked := func(via string) float64 { return acksAfter[via] - acksBefore[via] }
	// The warm-up came first, after no delivery at all: its ack went at once.
	if acked("stream") < 1 || acked("stream")+acked("heartbeat") != deliveries+1 {
		t.Fatalf("acks by way: %v before, %v after; want the %d on the stream or heartbeats, at least the first on the stream\n%s",
			acksBefore, acksAfter, deliveries+1, logs)
	}
	if !strings.Contains(logs.String(), "assignment active") {
		t.Fatalf("the agent did not log its acks' results:\n%s", logs)
	}

	// A burst: each delivery comes before the earlier items' acks have
	// gone, and re-applies them still assigned. Each is acked once.
	for i := range 5 {
		if _, err := h.a.Nodes().PlaceWork(context.Background(), nodes.Actor{Name: "test"}, nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("burst-%d", i), Cost: 1}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 30*time.Second, "the burst active", func() bool {
		var n int
		_ = h.a.Pool().QueryRow(context.Background(), "SELECT count(*) FROM work WHERE ref LIKE 'burst-%' AND state = 'active'").Scan(&n)
		return n == 5
	})
	if strings.Contains(logs.String(), "acked twice") {
		t.Fatalf("the agent acked an item twice in one batch:\n%s", logs)
	}
}

// beatCounts reads metrics.AgentHeartbeats: the heartbeats the call
// managers of this process received, by how they came.
func beatCounts(t *testing.T) map[string]float64 {
	return counters(t, "callplane_agent_heartbeats_total", "via")
}

// nodeagent sends its heartbeats on its POST stream's body to a call
// manager that takes them there, and acts on their answers as on a
// heartbeat request's: a credential an administrator asked to rotate is
// taken from a beat's answer and used from then on.
func TestRunBeatsOnTheStream(t *testing.T) {
	url := dbtest.URL(t)
	h := &haCluster{a: servertest.Start(t, servertest.Options{DatabaseURL: url, Settings: servertest.NoProbes}), dbURL: url}
	before := beatCounts(t)
	stateDir, logs := h.runAgentPolling(t, h.a.URL, time.Minute)
	h.placeActive(t, "warm-up") // the stream is open
	waitUntil(t, 30*time.Second, "a beat on the stream", func() bool {
		return beatCounts(t)["stream"]-before["stream"] >= 1
	})
	// From then on the beats go on the stream, answered there: a beat
	// without its answer in time is sent again in a request.
	onStream, requests := beatCounts(t)["stream"], agentRequests(t)["POST /api/v1/heartbeat"]
	waitUntil(t, 30*time.Second, "four more beats on the stream", func() bool {
		return beatCounts(t)["stream"]-onStream >= 4
	})
	if n, m := agentRequests(t)["POST /api/v1/heartbeat"]-requests, beatCounts(t)["stream"]-onStream; 2*n >= m {
		t.Fatalf("%v heartbeat requests beside %v beats on the stream: the beats had no answer there\n%s", n, m, logs)
	}
	if age := h.heartbeatAge(t); age > 10*time.Second {
		t.Fatalf("the node's last heartbeat is %s old with its beats on the stream", age)
	}

	old := storedCredential(t, stateDir)
	if err := h.a.Nodes().RequestRotation(context.Background(), nodes.Actor{Name: "test"}, "m1"); err != nil {
		t.Fatal(err)
	}
	atRotation := beatCounts(t)
	// The agent stores the credential, then says so.
	waitUntil(t, 30*time.Second, "the rotated credential stored and the rotation logged", func() bool {
		return storedCredential(t, stateDir) != old && strings.Contains(logs.String(), "node credential rotated")
	})
	if beatCounts(t)["stream"] == atRotation["stream"] {
		t.Fatalf("the credential was rotated without a beat on the stream (beats %v)\n%s", beatCounts(t), logs)
	}
	// The new credential works: the next item goes active.
	h.placeActive(t, "after-rotation")
}

func storedCredential(t *testing.T, dir string) string {
	t.Helper()
	st, err := agent.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st.Credential
}

// A start hook runs beside the stream, not in its reader: while a hook
// takes longer than a beat's answer may (half a heartbeat interval), the
// beats still go on the stream and are answered there. Read in the
// reader, the delivery held up the beat's answer, which ended the stream,
// and the agent reconnected with a back-off while its beats went in
// requests of their own.
func TestRunSlowStartHookKeepsTheStream(t *testing.T) {
	url := dbtest.URL(t)
	h := &haCluster{a: servertest.Start(t, servertest.Options{DatabaseURL: url, Settings: servertest.NoProbes}), dbURL: url}
	dir := t.TempDir()
	started, finished := filepath.Join(dir, "started"), filepath.Join(dir, "finished")
	hook := fmt.Sprintf(`[ "$CALLPLANE_REF" != slow ] || [ "$CALLPLANE_ACTION" != start ] || { touch %q; sleep 6; touch %q; }`, started, finished)
	_, logs := h.runAgentWith(t, h.a.URL, time.Minute, func(o *agent.RunOptions) {
		o.OnAssign = hook
		o.HookTimeout = time.Minute
	})
	h.placeActive(t, "warm-up") // the stream is open
	if _, err := h.a.Nodes().PlaceWork(context.Background(), nodes.Actor{Name: "test"}, nodes.WorkInput{Kind: "call", Ref: "slow", Cost: 1}); err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	waitUntil(t, 30*time.Second, "the slow start hook running", func() bool { return exists(started) })
	during := beatCounts(t)["stream"]
	waitUntil(t, 60*time.Second, "the slow start hook done", func() bool { return exists(finished) })
	if n := beatCounts(t)["stream"] - during; n < 2 {
		t.Fatalf("%v beats on the stream during a 6 s start hook, want 2 or more\n%s", n, logs)
	}
	h.waitActive(t, "slow")
	h.placeActive(t, "after") // and the stream still delivers
}
