package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/callplane/callplane/nodes/agentproto"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hookScript records every hook run as one line in $HOOK_LOG and fails for
// the ref "bad".
const hookScript = `echo "$CALLPLANE_ACTION id=$CALLPLANE_ASSIGNMENT_ID ref=$CALLPLANE_REF kind=$CALLPLANE_KIND cost=$CALLPLANE_COST epoch=$CALLPLANE_EPOCH node=$CALLPLANE_NODE" >> "$HOOK_LOG"; echo "hello from $CALLPLANE_REF"; [ "$CALLPLANE_REF" != bad ]`

type runEnv struct {
	cm      *callManager
	url     string
	dir     string
	hookLog string
	logs    *lockedBuffer
	cancel  context.CancelFunc
	done    chan error
}

// setup joins a node against a fresh call manager and starts Run with short
// intervals and the recording hook.
func setup(t *testing.T, tweak func(*RunOptions)) *runEnv {
	t.Helper()
	cm := newCallManager()
	srv, pin := startTLS(t, cm.handler(), nil, nil)
	dir := t.TempDir()
	if _, err := Join(t.Context(), JoinOptions{Servers: []string{srv.URL}, Token: testToken, CAPin: pin, StateDir: dir}); err != nil {
		t.Fatalf("Join: %v", err)
	}
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	t.Setenv("HOOK_LOG", hookLog) // inherited by hooks; also rules out t.Parallel
	e := &runEnv{cm: cm, url: srv.URL, dir: dir, hookLog: hookLog, logs: &lockedBuffer{}}
	opts := RunOptions{
		StateDir:    dir,
		OnAssign:    hookScript,
		Version:     "9.9.9",
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HookTimeout: 5 * time.Second,
		HookRetry:   10 * time.Millisecond,
		PollWait:    200 * time.Millisecond,
		ReportEvery: time.Millisecond,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  50 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&opts)
	}
	e.start(t, opts)
	return e
}

func (e *runEnv) start(t *testing.T, opts RunOptions) {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- Run(ctx, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", e.logs.String())
		}
	})
}

// stopRun cancels Run and returns its result.
func (e *runEnv) stopRun(t *testing.T) error {
	t.Helper()
	e.cancel()
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func (e *runEnv) hookLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(e.hookLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(lines)
	return lines
}

// waitPolls waits until the agent has sent n more polls than now, which
// proves the previous answer has been applied.
func (e *runEnv) waitPolls(t *testing.T, n int) {
	t.Helper()
	_, start, _, _ := e.cm.snapshot()
	eventually(t, "agent polls again", func() bool { _, p, _, _ := e.cm.snapshot(); return p >= start+n })
}

// lastHeartbeat is the last heartbeat that reported the running set.
func (e *runEnv) lastHeartbeat() (agentproto.HeartbeatRequest, bool) {
	_, _, _, hbs := e.cm.snapshot()
	for i := len(hbs) - 1; i >= 0; i-- {
		if hbs[i].Running != nil {
			return hbs[i], true
		}
	}
	return agentproto.HeartbeatRequest{}, false
}

func (e *runEnv) waitRunning(t *testing.T, load int32, running ...agentproto.Running) {
	t.Helper()
	eventually(t, "heartbeat reports the running set", func() bool {
		hb, ok := e.lastHeartbeat()
		return ok && hb.Load == load && slices.Equal(hb.Running, running) && hb.Version == "9.9.9"
	})
}

func TestRunAppliesDesiredSetIdempotently(t *testing.T) {
	e := setup(t, nil)
	a1 := agentproto.Assignment{ID: 17, Ref: "call-abc", Kind: "call", Cost: 1, Epoch: 2, State: agentproto.StateAssigned}
	a2 := agentproto.Assignment{ID: 18, Ref: "ivr-main", Kind: "ivr", Cost: 3, Epoch: 1, State: agentproto.StateAssigned}
	e.cm.setDesired(a1, a2)

	e.waitRunning(t, 4, agentproto.Running{ID: 17, Epoch: 2}, agentproto.Running{ID: 18, Epoch: 1})
	eventually(t, "both acked active", func() bool { _, _, acks, _ := e.cm.snapshot(); return len(acks) == 2 })
	_, _, acks, _ := e.cm.snapshot()
	slices.SortFunc(acks, func(x, y ackRecord) int { return int(x.ID - y.ID) })
	if want := []ackRecord{{17, agentproto.StateActive, 2}, {18, agentproto.StateActive, 1}}; !slices.Equal(acks, want) {
		t.Fatalf("acks = %+v, want %+v", acks, want)
	}
	want := []string{
		"start id=17 ref=call-abc kind=call cost=1 epoch=2 node=media-1",
		"start id=18 ref=ivr-main kind=ivr cost=3 epoch=1 node=media-1",
	}
	if got := e.hookLines(t); !slices.Equal(got, want) {
		t.Fatalf("hook runs = %q, want %q", got, want)
	}
	if !strings.Contains(e.logs.String(), `msg="hook output" hook=start assignment=17 ref=call-abc line="hello from call-abc"`) {
		t.Errorf("hook output not in the agent log:\n%s", e.logs.String())
	}

	// Duplicate deliveries (the server now reports them active, and the
	// same set again as assigned) change nothing.
	e.cm.setDesired(a1, a2)
	e.waitPolls(t, 2)
	a1Again, a2Again := a1, a2
	a1Again.State, a2Again.State = agentproto.StateActive, agentproto.StateActive
	e.cm.setDesired(a1Again, a2Again)
	e.waitPolls(t, 2)
	if got := e.hookLines(t); !slices.Equal(got, want) {
		t.Fatalf("duplicate delivery ran hooks again: %q", got)
	}
	if _, _, acks, _ := e.cm.snapshot(); len(acks) != 2 {
		t.Fatalf("duplicate delivery acked again: %+v", acks)
	}

	// Removal runs the stop hook; a new epoch for the same id starts it again.
	a2Moved := a2
	a2Moved.Epoch, a2Moved.State = 5, agentproto.StateAssigned
	e.cm.setDesired(a2Moved)
	e.waitRunning(t, 3, agentproto.Running{ID: 18, Epoch: 5})
	eventually(t, "new epoch acked", func() bool {
		_, _, acks, _ := e.cm.snapshot()
		return slices.Contains(acks, ackRecord{18, agentproto.StateActive, 5})
	})
	want = append(want,
		"start id=18 ref=ivr-main kind=ivr cost=3 epoch=5 node=media-1",
		"stop id=17 ref=call-abc kind=call cost=1 epoch=2 node=media-1",
	)
	slices.Sort(want)
	if got := e.hookLines(t); !slices.Equal(got, want) {
		t.Fatalf("hook runs = %q, want %q", got, want)
	}

	if strings.Contains(e.logs.String(), testCredential) || strings.Contains(e.logs.String(), "secretsecret") {
		t.Fatal("credential in the agent log")
	}

	// Shutting down runs no stop hooks: the work stays with the node.
	if err := e.stopRun(t); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if got := e.hookLines(t); !slices.Equal(got, want) {
		t.Fatalf("shutdown ran hooks: %q", got)
	}
}

func TestRunAdoptsActiveAssignmentsAfterRestart(t *testing.T) {
	e := setup(t, nil)
	a := agentproto.Assignment{ID: 30, Ref: "conf-1", Kind: "meeting", Cost: 2, Epoch: 7, State: agentproto.StateActive}
	e.cm.setDesired(a)
	e.waitRunning(t, 2, agentproto.Running{ID: 30, Epoch: 7})
	e.cm.setDesired(a)
	e.waitPolls(t, 2)
	if got := e.hookLines(t); len(got) != 1 || !strings.HasPrefix(got[0], "start id=30 ") {
		t.Fatalf("hook runs = %q, want one start", got)
	}
	if _, _, acks, _ := e.cm.snapshot(); len(acks) != 0 {
		t.Fatalf("acked an assignment already active: %+v", acks)
	}
}

func TestRunStaleEpochDropsAssignment(t *testing.T) {
	e := setup(t, nil)
	e.cm.mu.Lock()
	e.cm.ackStatus[40] = 409
	e.cm.mu.Unlock()
	keep := agentproto.Assignment{ID: 41, Ref: "call-keep", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned}
	moved := agentproto.Assignment{ID: 40, Ref: "call-moved", Kind: "call", Cost: 1, Epoch: 3, State: agentproto.StateAssigned}
	e.cm.setDesired(moved, keep)

	eventually(t, "stale assignment stopped", func() bool {
		return slices.Contains(e.hookLines(t), "stop id=40 ref=call-moved kind=call cost=1 epoch=3 node=media-1")
	})
	e.waitRunning(t, 1, agentproto.Running{ID: 41, Epoch: 1})
	// The same stale epoch delivered again is not started again.
	e.cm.setDesired(moved, keep)
	e.waitPolls(t, 2)
	starts := 0
	for _, l := range e.hookLines(t) {
		if strings.HasPrefix(l, "start id=40 ") {
			starts++
		}
	}
	if starts != 1 {
		t.Fatalf("stale assignment started %d times: %q", starts, e.hookLines(t))
	}
	e.waitRunning(t, 1, agentproto.Running{ID: 41, Epoch: 1})
}

func TestRunHookFailureAcksFailed(t *testing.T) {
	e := setup(t, nil)
	bad := agentproto.Assignment{ID: 50, Ref: "bad", Kind: "queue", Cost: 1, Epoch: 4, State: agentproto.StateAssigned}
	e.cm.setDesired(bad)
	eventually(t, "failed ack", func() bool {
		_, _, acks, _ := e.cm.snapshot()
		return slices.Equal(acks, []ackRecord{{50, agentproto.StateFailed, 4}})
	})
	e.waitRunning(t, 0)
	// Tried DefaultHookAttempts times with backoff, then acked failed with
	// the hook's error, which the server shows and alerts on.
	if got := e.hookLines(t); len(got) != DefaultHookAttempts {
		t.Fatalf("hook runs = %q, want %d", got, DefaultHookAttempts)
	}
	if reason := e.cm.ackError(50); !strings.Contains(reason, "hook start failed") {
		t.Fatalf("failed ack reason %q", reason)
	}
	// Redelivered at the same epoch it is not retried; at a new epoch it is.
	e.cm.setDesired(bad)
	e.waitPolls(t, 2)
	if got := e.hookLines(t); len(got) != DefaultHookAttempts {
		t.Fatalf("hook runs = %q after a redelivery, want %d", got, DefaultHookAttempts)
	}
	bad.Epoch = 5
	e.cm.setDesired(bad)
	eventually(t, "retry at new epoch", func() bool { return len(e.hookLines(t)) == 2*DefaultHookAttempts })
}

func TestRunHookTimeout(t *testing.T) {
	t.Parallel()
	start := time.Now()
	err := runHook(t.Context(), slog.New(slog.DiscardHandler), "sleep 30 & sleep 30", 200*time.Millisecond, "n", actionStart, agentproto.Assignment{ID: 1})
	if err == nil || !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Fatalf("runHook = %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("timed-out hook held the agent for %v", took)
	}
}

func TestRunDisabledKeepsGoing(t *testing.T) {
	e := setup(t, nil)
	a := agentproto.Assignment{ID: 60, Ref: "call-x", Kind: "call", Cost: 2, Epoch: 1, State: agentproto.StateAssigned}
	e.cm.setDesired(a)
	e.waitRunning(t, 2, agentproto.Running{ID: 60, Epoch: 1})

	e.cm.set403(403, 403)
	eventually(t, "disabled node stops its work", func() bool {
		return slices.Contains(e.hookLines(t), "stop id=60 ref=call-x kind=call cost=2 epoch=1 node=media-1")
	})
	_, _, _, hbs := e.cm.snapshot()
	eventually(t, "heartbeats continue while disabled", func() bool {
		_, _, _, now := e.cm.snapshot()
		return len(now) >= len(hbs)+3
	})
	select {
	case err := <-e.done:
		t.Fatalf("Run returned on 403: %v", err)
	default:
	}
	if !strings.Contains(e.logs.String(), "node disabled by administrator") {
		t.Errorf("no 'node disabled by administrator' in the log")
	}

	// Enabled again: the desired set is applied afresh.
	e.cm.set403(0, 0)
	e.waitRunning(t, 2, agentproto.Running{ID: 60, Epoch: 1})
}

func TestRunCredentialRejected(t *testing.T) {
	e := setup(t, nil)
	a := agentproto.Assignment{ID: 70, Ref: "call-y", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned}
	e.cm.setDesired(a)
	e.waitRunning(t, 1, agentproto.Running{ID: 70, Epoch: 1})
	e.cm.set403(401, 0)
	select {
	case err := <-e.done:
		e.done <- err
		if !errors.Is(err, ErrCredentialRejected) {
			t.Fatalf("Run = %v, want ErrCredentialRejected", err)
		}
		if want := "credential rejected: node removed or credential revoked; re-join with a new token"; err.Error() != want {
			t.Fatalf("error = %q", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run kept going after 401")
	}
	if !slices.Contains(e.hookLines(t), "stop id=70 ref=call-y kind=call cost=1 epoch=1 node=media-1") {
		t.Fatalf("work of a removed node not stopped: %q", e.hookLines(t))
	}
	if _, err := Load(e.dir); err != nil {
		t.Fatalf("identity lost: %v", err)
	}
}

func TestRunPinMismatchIsFatal(t *testing.T) {
	t.Parallel()
	cm := newCallManager()
	srv, _ := startTLS(t, cm.handler(), nil, nil)
	dir := t.TempDir()
	st := &State{NodeID: 1, NodeName: "im-1", Kind: "im", Server: srv.URL, CAPin: agentproto.PinOf(newCert(t).Leaf), Credential: testCredential}
	p, err := beginStateWrite(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.commit(st); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = Run(ctx, RunOptions{StateDir: dir, MinBackoff: 10 * time.Millisecond})
	var pe *agentproto.PinMismatchError
	if !errors.As(err, &pe) {
		t.Fatalf("Run = %v, want a pin mismatch", err)
	}
	if requests, _, _, _ := cm.snapshot(); requests != 0 {
		t.Fatalf("credential sent to the wrong server (%d requests)", requests)
	}
}

func TestRunNotJoined(t *testing.T) {
	t.Parallel()
	err := Run(t.Context(), RunOptions{StateDir: t.TempDir()})
	if !errors.Is(err, ErrNotJoined) {
		t.Fatalf("Run = %v, want ErrNotJoined", err)
	}
}

// TestRunBacksOffWhileServerDown points the agent at a port that accepts
// and drops connections, counts the attempts, then brings the server up on
// that port and checks the agent recovers with its identity.
func TestRunBacksOffWhileServerDown(t *testing.T) {
	cm := newCallManager()
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := down.Addr().String()
	attempts := make(chan struct{}, 10000)
	go func() {
		for {
			c, err := down.Accept()
			if err != nil {
				return
			}
			attempts <- struct{}{}
			c.Close()
		}
	}()

	// Join first against a server on another port, then move the identity
	// to the dead address: same key, same pin.
	cert := newCert(t)
	joinSrv, pin := startTLS(t, cm.handler(), &cert, nil)
	dir := t.TempDir()
	if _, err := Join(t.Context(), JoinOptions{Servers: []string{joinSrv.URL}, Token: testToken, CAPin: pin, StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	st, _ := Load(dir)
	st.Servers = []string{"https://" + addr}
	p, _ := beginStateWrite(dir)
	if err := p.commit(st); err != nil {
		t.Fatal(err)
	}

	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunOptions{StateDir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil)),
			PollWait: 200 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	}()
	defer func() {
		cancel()
		<-done
	}()

	time.Sleep(600 * time.Millisecond)
	n := len(attempts)
	// Two loops; without backoff they would make thousands of attempts.
	// With 20→80ms (±20%) each makes at most ~11 in 600ms.
	if n < 4 || n > 30 {
		t.Fatalf("%d connection attempts in 600ms; backoff not working", n)
	}
	if !regexp.MustCompile(`msg="heartbeat failed" err="cannot reach server https://` + regexp.QuoteMeta(addr)).MatchString(logs.String()) {
		t.Errorf("unreachable server not logged:\n%s", logs.String())
	}

	// The server comes back on the same address.
	down.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("could not take over %s: %v", addr, err)
	}
	startTLS(t, cm.handler(), &cert, ln)
	eventually(t, "heartbeat after the server is back", func() bool {
		_, _, _, hbs := cm.snapshot()
		return len(hbs) > 0
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned while the server was down: %v", err)
	default:
	}
}

func TestRunServesProbeEndpoint(t *testing.T) {
	t.Parallel()
	cm := newCallManager()
	srv, pin := startTLS(t, cm.handler(), nil, nil)
	dir := t.TempDir()
	st := &State{NodeID: 9, NodeName: "im-1", Kind: "im", Server: srv.URL, CAPin: pin, Credential: testCredential}
	p, _ := beginStateWrite(dir)
	if err := p.commit(st); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	t.Cleanup(cancel)
	go func() {
		done <- Run(ctx, RunOptions{StateDir: dir, ProbeListen: "127.0.0.1:0", PollWait: time.Second,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	re := regexp.MustCompile(`msg="probe endpoint listening" kind=im address=(\S+)`)
	var addr string
	eventually(t, "probe endpoint address in the log", func() bool {
		m := re.FindStringSubmatch(logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("probe endpoint not reachable: %v", err)
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("probe endpoint still open after Run returned")
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := &backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	base := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second}
	for round := 0; round < 50; round++ {
		for i, want := range base {
			got := b.next()
			lo, hi := time.Duration(float64(want)*0.8), time.Duration(float64(want)*1.2)
			if got < lo || got > hi {
				t.Fatalf("step %d: %v not within %v..%v", i, got, lo, hi)
			}
		}
		b.reset()
	}
}

// TestRunPollDoesNotSpin checks the guard against a server that ignores
// wait and answers an unchanged set at once.
func TestRunPollDoesNotSpin(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"admin_state": "enabled", "heartbeat_interval_ms": 1000})
	})
	mux.HandleFunc("GET /api/v1/assignments", func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		writeJSON(w, 200, agentproto.DesiredSet{Version: 1, Assignments: []agentproto.Assignment{}})
	})
	srv, pin := startTLS(t, mux, nil, nil)
	dir := t.TempDir()
	p, _ := beginStateWrite(dir)
	if err := p.commit(&State{NodeID: 1, NodeName: "q-1", Kind: "queue", Server: srv.URL, CAPin: pin, Credential: testCredential}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := Run(ctx, RunOptions{StateDir: dir, MinBackoff: 50 * time.Millisecond}); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n := polls.Load(); n < 2 || n > 15 {
		t.Fatalf("%d polls in 500ms against an impatient server", n)
	}
}

// A changed running set rides a heartbeat no oftener than ReportEvery (the
// server compares it no oftener): with the gap long, only every
// FullReportEvery-th beat carries it, however often the work changes, and
// no change sends a heartbeat of its own. The load still goes on every
// beat.
func TestRunReportsChangedRunningSetAtMostEveryReportEvery(t *testing.T) {
	e := setup(t, func(o *RunOptions) { o.ReportEvery = time.Hour })
	_, _, _, before := e.cm.snapshot()
	var set []agentproto.Assignment
	const changes = 6
	for i := range changes {
		set = append(set, agentproto.Assignment{ID: int64(80 + i), Ref: fmt.Sprintf("call-%d", i), Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned})
		e.cm.setDesired(set...)
		eventually(t, "the new item acked", func() bool { _, _, acks, _ := e.cm.snapshot(); return len(acks) == i+1 })
		// A few beats between changes, as on a node taking work steadily.
		n := len(before)
		eventually(t, "three more heartbeats", func() bool { _, _, _, hbs := e.cm.snapshot(); return len(hbs) >= n+3 })
		_, _, _, before = e.cm.snapshot()
	}
	eventually(t, "the load of every item reported", func() bool {
		_, _, _, hbs := e.cm.snapshot()
		return len(hbs) > 0 && hbs[len(hbs)-1].Load == changes
	})
	_, _, _, hbs := e.cm.snapshot()
	reports := 0
	for _, hb := range hbs {
		if hb.Running != nil {
			reports++
		}
	}
	if limit := len(hbs)/agentproto.FullReportEvery + 1; reports > limit {
		t.Fatalf("%d of %d heartbeats carried the running set over %d changes, want at most %d (every %dth beat)", reports, len(hbs), changes, limit, agentproto.FullReportEvery)
	}
}
