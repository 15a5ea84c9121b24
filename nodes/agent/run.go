package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// ErrCredentialRejected is returned by Run when the server answers 401: the
// node was removed or its credential revoked. Retrying cannot help; only a
// new join can.
var ErrCredentialRejected = errors.New("credential rejected: node removed or credential revoked; re-join with a new token")

// Defaults of RunOptions.
const (
	DefaultHookTimeout = 10 * time.Second
	// DefaultHookAttempts is how often a start hook is tried for one
	// assignment before the agent reports the start failed.
	DefaultHookAttempts = 3
	// DefaultHookRetry is the delay before the second try of a failed
	// start hook; each later delay doubles.
	DefaultHookRetry  = time.Second
	DefaultPollWait   = agentproto.DefaultPollWait
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second

	// hookParallelism bounds how many hooks run at once when one desired
	// set starts or stops many assignments.
	hookParallelism = 8
	// ackRetryWait shortens the long poll while an ack is outstanding, so
	// the server resends the set soon and the ack is retried.
	ackRetryWait = time.Second
	// batchAckRetry is how long the agent acks one by one after a server
	// answered that it has no batch ack API (an older call manager), before
	// it tries the batch API again (the server may have been upgraded).
	batchAckRetry = 10 * time.Minute
)

// RunOptions are the inputs of Run. Zero durations take the defaults above;
// tests shorten them.
type RunOptions struct {
	StateDir    string       // identity written by Join
	Servers     []string     // when set, replaces (and is stored over) the call managers Join stored
	ProbeListen string       // when set, serve the node kind's probe endpoint here
	OnAssign    string       // hook command run with /bin/sh -c on start and stop
	Version     string       // agent version reported in heartbeats
	Logger      *slog.Logger // nil discards logs

	HookTimeout time.Duration // bound of one hook run (default 10s)
	// HookAttempts and HookRetry: a failing start hook is tried
	// HookAttempts times (default 3), HookRetry (default 1s) apart and
	// doubling, before the start is acked failed with the hook's error.
	HookAttempts int
	HookRetry    time.Duration
	PollWait     time.Duration // long-poll wait asked of the server (default 30s)
	MinBackoff   time.Duration // first retry delay when the server fails (default 0.5s)
	MaxBackoff   time.Duration // largest retry delay (default 30s)
	// ReportEvery is the least time between two heartbeats that carry
	// the running set because it changed (default
	// agentproto.ReconcileEvery, how often the server compares it).
	ReportEvery time.Duration
}

func (o RunOptions) withDefaults() RunOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HookTimeout <= 0 {
		o.HookTimeout = DefaultHookTimeout
	}
	if o.HookAttempts <= 0 {
		o.HookAttempts = DefaultHookAttempts
	}
	if o.HookRetry <= 0 {
		o.HookRetry = DefaultHookRetry
	}
	if o.PollWait <= 0 {
		o.PollWait = DefaultPollWait
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.ReportEvery <= 0 {
		o.ReportEvery = agentproto.ReconcileEvery
	}
	return o
}

// Run keeps the enrolled node connected until ctx ends (then it returns nil)
// or the server rejects the node's credential (ErrCredentialRejected).
//
// Two loops share one pinned HTTPS client. The heartbeat loop reports the
// load and the assignments really running, at the interval the server asks
// for. The poll loop takes the node's desired set as a stream (one open
// request, a line per change: a delta after the first whole set) and
// applies each delivery idempotently: an assignment new to this process
// (or back with a new epoch) runs the start hook and is acked active with
// its epoch, one that left the set runs the stop hook, and one unchanged
// is left alone, so a duplicate delivery changes nothing. The acks of a
// streamed delivery ride the next heartbeat, answered with their results,
// when deliveries come more often than heartbeats and the beat is due
// within agentproto.AckHold, else they go on the stream's body (a POST,
// answered on the stream) then; a delivery after a quiet spell is acked
// there at once, so a quiet node's work turns active as soon as its start
// hook has run (see queueAcks).
//
// A call manager that does not say it takes acks on the stream
// (agentproto.FeatureAckStream), or refuses the POST (4xx), gets a GET
// stream, and the acks ride the next heartbeat, answered with their
// results (an assignment turns active within a heartbeat interval). A call
// manager older than streams answers with one set: the
// agent then long-polls for a while (and also when a heartbeat's acks are
// refused), and the acks of one delivery go with the next poll (a POST
// of the long-poll, answered with their results). A server without that
// (405) gets them in a batch request (POST /api/v1/assignments/ack), and
// one without the batch API (404) one by one. After a restart the server hands back the set
// with state "active": the agent runs the start hook once for this process
// (hooks must therefore be idempotent) and does not ack again. A start hook
// that fails is acked "failed"; an ack answered 409 (stale epoch) or 404
// means the work moved away, so it is stopped and dropped.
//
// Requests go to one call manager of the stored list at a time and move to
// the next when it does not answer (see apiClient). While none answers,
// both loops retry with jittered exponential backoff (heartbeats never
// slower than their interval) and the node keeps its identity and its
// running work; the first heartbeat that gets through again wakes the poll. A 403 means
// the administrator disabled the node, whose work the server moves away at
// once: the agent stops what it runs and keeps heartbeating with backoff
// until the node is enabled again. A 401 stops all work and ends Run.
//
// Shutting down (ctx ends) runs no stop hooks: the work belongs to the node,
// not to this process, and is re-adopted by the next agent process.
func Run(ctx context.Context, opts RunOptions) error {
	opts = opts.withDefaults()
	st, err := Load(opts.StateDir)
	if err != nil {
		return err
	}
	log := opts.Logger
	if len(opts.Servers) > 0 {
		if err := useServers(opts.StateDir, st, opts.Servers, log); err != nil {
			return err
		}
	}
	api, err := newAPIClient(st.Servers, st.CAPin, st.Credential, opts.Version, log)
	if err != nil {
		return err
	}
	defer api.close()
	a := &agent{
		st:      st,
		api:     api,
		log:     log,
		opts:    opts,
		kick:    make(chan struct{}, 1),
		acksDue: make(chan struct{}, 1),
		reached: make(chan struct{}, 1),
		running: make(map[int64]*localAssignment),
		dead:    make(map[int64]int64),
	}
	log.Info("node agent starting", "node", st.NodeName, "node_id", st.NodeID, "kind", st.Kind, "servers", strings.Join(st.Servers, ","))

	if opts.ProbeListen != "" {
		closeProbe, addr, err := startProbe(ctx, st.Kind, opts.ProbeListen)
		if err != nil {
			return fmt.Errorf("serve probe endpoint: %w", err)
		}
		defer func() {
			if err := closeProbe(); err != nil {
				log.Warn("close probe endpoint", "err", err)
			}
		}()
		log.Info("probe endpoint listening", "kind", st.Kind, "address", addr)
	}

	loopCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := a.heartbeatLoop(loopCtx); err != nil {
			cancel(err)
		}
	})
	wg.Go(func() {
		if err := a.pollLoop(loopCtx); err != nil {
			cancel(err)
		}
	})
	wg.Wait()
	a.results.Wait()

	if cause := context.Cause(loopCtx); ctx.Err() == nil && cause != nil {
		if errors.Is(cause, ErrCredentialRejected) {
			log.Error("credential rejected; stopping all work", "node", st.NodeName)
			a.stopAll(ctx)
		}
		return cause
	}
	log.Info("node agent stopped", "node", st.NodeName)
	return nil
}

// useServers replaces the stored call manager list with servers (from
// "nodeagent run --server"), so an operator can point an enrolled agent at
// a changed set of call managers without a new join token; the state file
// keeps the new list for the next start.
func useServers(dir string, st *State, servers []string, log *slog.Logger) error {
	list, err := ParseServers(servers)
	if err != nil {
		return err
	}
	if slices.Equal(list, st.Servers) {
		return nil
	}
	next := *st
	next.Servers = list
	p, err := beginStateWrite(dir)
	if err == nil {
		err = p.commit(&next)
	}
	if err != nil {
		return fmt.Errorf("store the call manager list: %w", err)
	}
	log.Info("call manager list changed", "servers", strings.Join(list, ","), "was", strings.Join(st.Servers, ","))
	*st = next
	return nil
}

// localAssignment is an assignment this process has started.
type localAssignment struct {
	agentproto.Assignment
	acked bool // the server knows it as active at this epoch
}

type agent struct {
	st   *State
	api  *apiClient
	log  *slog.Logger
	opts RunOptions
	kick chan struct{} // asks the heartbeat loop to report a changed running set now
	// reached tells the poll loop that a heartbeat got through after
	// failures, so a poll backing off retries at once.
	reached chan struct{}

	mu      sync.Mutex
	running map[int64]*localAssignment
	// runningChanged, beats and reported (when the set last went) decide
	// when a heartbeat carries the running set (see report).
	runningChanged bool
	beats          int
	reported       time.Time
	// dead holds, per id, the epoch this process refused or lost (start hook
	// failed, stale epoch, not ours) so a repeated delivery of that same
	// epoch does not start it again.
	dead map[int64]int64
	// noBatchUntil: the server answered 404 to a batch ack; ack one by
	// one until then.
	noBatchUntil time.Time
	// noPollAcksUntil: the server refused acks on the poll; send them on
	// their own until then.
	noPollAcksUntil time.Time
	// noStreamUntil: the server answered a stream with one set, or
	// refused acks on a heartbeat (older than streams); long-poll until then.
	noStreamUntil time.Time
	// streamedAcks are what streamed deliveries owe the server: they ride
	// the next heartbeat, or go at once on the stream's body when acksDue
	// says so (see queueAcks). refusedAcks are acks a heartbeat could not
	// carry (an older server): the poll loop sends them.
	streamedAcks, refusedAcks []pendingAck
	acksDue                   chan struct{}
	// lastOwed is when a delivery last owed acks; beatEvery the heartbeat
	// interval the server asks for; ackHeld says a busy node's acks are
	// held for agentproto.AckHold at most.
	lastOwed  time.Time
	beatEvery time.Duration
	ackHeld   bool
	// noAckStreamUntil: the server refused a POST stream (older than
	// acks on the stream); streams are a GET, acks on the heartbeats,
	// until then.
	noAckStreamUntil time.Time
	// stream is the POST stream open now, if any: heartbeats go on its
	// body when its call manager takes them there.
	stream *ackStream
	// results runs the handling of the acks' results (a stale epoch runs
	// the stop hook) off the heartbeat loop.
	results sync.WaitGroup
}

// pendingAck is an ack that applying a desired set owes the server.
type pendingAck struct {
	d      agentproto.Assignment
	state  string // active or failed
	reason string // why the start failed
}

// report is the heartbeat body: the load, the assignments running here
// and the acks streamed deliveries owe (also returned, to match with
// their results).
func (a *agent) report() (agentproto.HeartbeatRequest, []pendingAck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	req := agentproto.HeartbeatRequest{Version: a.opts.Version}
	n := min(len(a.streamedAcks), agentproto.MaxAckBatch)
	sent := a.streamedAcks[:n:n]
	a.streamedAcks = a.streamedAcks[n:]
	req.Acks = ackItems(sent)
	for _, l := range a.running {
		req.Load += l.Cost
	}
	// The running set is what the call manager reconciles against; it is
	// sent when it changed (no oftener than the server compares it) and on
	// every agentproto.FullReportEvery-th beat, not each second, so a
	// thousand agents' heartbeats stay small.
	a.beats++
	if (a.runningChanged && a.reportDue()) || a.beats%agentproto.FullReportEvery == 1 {
		list := make([]agentproto.Running, 0, len(a.running))
		for _, l := range a.running {
			list = append(list, agentproto.Running{ID: l.ID, Epoch: l.Epoch})
		}
		slices.SortFunc(list, func(x, y agentproto.Running) int { return int(x.ID - y.ID) })
		req.Running = list
		a.runningChanged = false
		a.reported = time.Now()
	}
	return req, sent
}

// unsent puts acks a heartbeat did not deliver back: first in line for the
// next beat, or, when the server refused them there (older than streams),
// for the poll loop to send, which then long-polls for a while.
func (a *agent) unsent(sent []pendingAck, refused bool) {
	if len(sent) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !refused {
		a.streamedAcks = distinctAcks(append(sent, a.streamedAcks...))
		a.ackDue()
		return
	}
	a.noStreamUntil = time.Now().Add(batchAckRetry)
	a.refusedAcks = append(append(a.refusedAcks, sent...), a.streamedAcks...)
	a.streamedAcks = nil
}

// queueAcks queues the acks a streamed delivery owes. When deliveries
// come often (the last that owed acks came less than a heartbeat interval
// ago) they ride the next heartbeat, which the agent sends anyway, if it
// comes within agentproto.AckHold, else they go on the stream's body then,
// with every ack owed by that time: a busy node's acks cost a few lines a
// second at most, and its work turns active within AckHold. A quiet
// node's go at once on the stream's body, when it carries acks, so its
// work turns active without waiting for the beat.
//
// An ack already queued is not queued twice: every delivery re-applies
// the whole held set, whose items still show as assigned until their acks
// have gone, and the server refuses an item acked twice in one batch.
func (a *agent) queueAcks(pending []pendingAck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.streamedAcks = distinctAcks(append(a.streamedAcks, pending...))
	if len(pending) == 0 {
		return
	}
	now := time.Now()
	switch {
	case now.Sub(a.lastOwed) >= cmp.Or(a.beatEvery, agentproto.HeartbeatInterval):
		a.ackDue()
	case !a.ackHeld:
		// Busy: the acks wait for the next beat, agentproto.AckHold at
		// most, then go on the stream with whatever else is owed by then.
		a.ackHeld = true
		time.AfterFunc(agentproto.AckHold, func() {
			a.mu.Lock()
			a.ackHeld = false
			a.mu.Unlock()
			a.ackDue()
		})
	}
	a.lastOwed = now
}

// ackDue tells the stream's body that acks are queued.
func (a *agent) ackDue() {
	select {
	case a.acksDue <- struct{}{}:
	default:
	}
}

// distinctAcks keeps the first ack of each assignment and epoch.
func distinctAcks(acks []pendingAck) []pendingAck {
	seen := make(map[[2]int64]bool, len(acks))
	out := acks[:0]
	for _, p := range acks {
		if k := [2]int64{p.d.ID, p.d.Epoch}; !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	return out
}

// streams says whether to take deliveries as a stream, and whether its
// body carries the acks.
func (a *agent) streams() (stream, acks bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	return now.After(a.noStreamUntil), now.After(a.noAckStreamUntil)
}

// reportDue says whether a changed running set may go now. The caller
// holds a.mu.
func (a *agent) reportDue() bool { return time.Since(a.reported) >= a.opts.ReportEvery }

func (a *agent) heartbeatLoop(ctx context.Context) error {
	bo := a.newBackoff()
	interval := agentproto.HeartbeatInterval
	adminState := ""
	failing := false
	for {
		req, sent := a.report()
		resp, err := a.heartbeat(ctx, a.heartbeatTimeout(interval), req)
		if err != nil {
			status := statusOf(err)
			a.unsent(sent, status == http.StatusBadRequest)
			if status == http.StatusBadRequest && len(sent) > 0 {
				a.log.Info("server takes no acks on heartbeats; long-polling and acking on the poll", "acks", len(sent))
			}
		} else if len(sent) > 0 {
			a.results.Go(func() { _ = a.ackResults(ctx, sent, resp.Acks) }) // a 401 also ends the heartbeats
		}
		var wait time.Duration
		switch status := statusOf(err); {
		case err == nil:
			bo.reset()
			if failing {
				failing = false
				select {
				case a.reached <- struct{}{}:
				default:
				}
			}
			if resp.AdminState != adminState {
				a.log.Info("admin state", "state", resp.AdminState, "was", adminState)
				adminState = resp.AdminState
			}
			interval = heartbeatInterval(resp.HeartbeatIntervalMS)
			wait = interval
			a.mu.Lock()
			a.beatEvery = interval
			a.mu.Unlock()
			if resp.Credential != "" {
				a.rotate(resp.Credential)
			}
		case ctx.Err() != nil:
			return nil
		case status == http.StatusUnauthorized:
			return ErrCredentialRejected
		case isPinMismatch(err):
			return err
		case status == http.StatusForbidden:
			wait = bo.next()
			if adminState != agentproto.AdminDisabled {
				a.log.Warn("node disabled by administrator; still heartbeating", "retry_in", wait)
				adminState = agentproto.AdminDisabled
			}
		default:
			// Heartbeats are retried no slower than they are sent: that is
			// the load the call managers are built for, and a node whose
			// agent backed off for long after a control-plane blip would
			// look lost for as long.
			wait = min(bo.next(), interval)
			failing = true
			a.log.Warn("heartbeat failed", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if !a.sleep(ctx, wait, err == nil) {
			return nil
		}
	}
}

// heartbeat sends a beat on the open stream's body, when its call manager
// takes beats there (a line each way instead of a request), else, or when
// it had no answer there within half the timeout, in a request of its own.
func (a *agent) heartbeat(ctx context.Context, timeout time.Duration, req agentproto.HeartbeatRequest) (*agentproto.HeartbeatResponse, error) {
	a.mu.Lock()
	s := a.stream
	a.mu.Unlock()
	if resp, err := s.beat(timeout/2, req); err == nil {
		return resp, nil
	}
	return a.api.heartbeat(ctx, timeout, req)
}

// heartbeatTimeout bounds one heartbeat attempt. With several call
// managers it is one interval: a server that cannot answer by the next beat
// is left for another, long before the heartbeat stale time (three
// intervals by default) makes the node look lost. With one server there is
// nowhere else to go, so a slow answer gets two intervals, still under the
// stale time.
func (a *agent) heartbeatTimeout(interval time.Duration) time.Duration {
	d := 2 * interval
	if len(a.api.servers) > 1 {
		d = interval
	}
	return max(d, time.Second)
}

// rotate stores a rotated credential in the state dir (atomically) and
// uses it from the next request. The old one keeps working on the server
// for a short overlap, so a failed write is retried at the next rotation.
func (a *agent) rotate(cred string) {
	if !validCredential(cred) {
		a.log.Warn("server sent a malformed rotated credential; keeping the current one")
		return
	}
	st := *a.st
	st.Credential = cred
	p, err := beginStateWrite(a.opts.StateDir)
	if err == nil {
		err = p.commit(&st)
	}
	if err != nil {
		a.log.Error("store rotated credential", "err", err)
		return
	}
	a.st.Credential = cred
	a.api.setCredential(cred)
	a.log.Info("node credential rotated", "node", a.st.NodeName)
}

// heartbeatInterval turns the server's interval into a duration, keeping it
// within sane bounds so a broken answer neither spins nor stalls the loop.
func heartbeatInterval(ms int64) time.Duration {
	if ms <= 0 {
		return agentproto.HeartbeatInterval
	}
	return min(max(time.Duration(ms)*time.Millisecond, 10*time.Millisecond), 10*time.Minute)
}

// sleep waits d or until ctx ends (false). When kickable, a change of the
// running set ends the wait early so the new load is reported at once.
func (a *agent) sleep(ctx context.Context, d time.Duration, kickable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var kick <-chan struct{}
	if kickable {
		kick = a.kick
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-kick:
	}
	return true
}

// sleepUntilReached waits d, or until a heartbeat gets through after
// failures, or until ctx ends (false).
func (a *agent) sleepUntilReached(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-a.reached:
	}
	return true
}

// kickHeartbeat marks the running set changed and, when a report of it is
// due, asks the heartbeat loop to send one now.
func (a *agent) kickHeartbeat() {
	a.mu.Lock()
	a.runningChanged = true
	due := a.reportDue()
	a.mu.Unlock()
	if !due {
		return // a later beat carries it
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *agent) pollLoop(ctx context.Context) error {
	bo := a.newBackoff()
	var since int64
	// held is the desired set as delivered: deltas are merged into it.
	var held map[int64]agentproto.Assignment
	var answered, full time.Time // when the last answer, and the last whole set, came
	disabled := false
	// owed are the acks the last long-poll answer's set owes the server;
	// they ride the next poll.
	var owed []pendingAck
	// take applies one delivery and returns the acks it owes.
	// merge takes one delivery into held.
	merge := func(ds *agentproto.DesiredSet) {
		since, answered = ds.Version, time.Now()
		if !ds.Delta {
			full = answered
		}
		held = ds.Apply(held)
	}
	take := func(ds *agentproto.DesiredSet) []pendingAck {
		merge(ds)
		return a.apply(ctx, slices.SortedFunc(maps.Values(held), byID))
	}
	for {
		a.mu.Lock()
		owed = append(owed, a.refusedAcks...)
		a.refusedAcks = nil
		a.mu.Unlock()
		asked := time.Now()
		// Deltas only follow a recent answer, and the whole set is taken
		// again now and then: a delta can only be computed from history the
		// server still keeps.
		delta := held != nil && asked.Sub(answered) < deltaAfter && asked.Sub(full) < resyncEvery
		var resp *agentproto.DesiredSet
		var err error
		var carried []pendingAck
		if stream, onBody := a.streams(); len(owed) == 0 && stream {
			// Deliveries as a stream, acks on its body (or the heartbeats).
			var acks *ackStream
			if onBody {
				acks = a.newAckStream()
			}
			a.mu.Lock()
			a.stream = acks
			a.mu.Unlock()
			got, streamed := false, false
			// The stream's reader merges each delivery into held and an
			// applier applies the latest set: start hooks never hold up the
			// reading of the stream (a beat's answer read late ends it).
			var heldMu sync.Mutex
			kick, applied := make(chan struct{}, 1), make(chan struct{})
			go func() {
				defer close(applied)
				for range kick {
					heldMu.Lock()
					set := slices.SortedFunc(maps.Values(held), byID)
					heldMu.Unlock()
					a.queueAcks(a.stillOwed(acks.notInFlight(a.apply(ctx, set))))
				}
			}()
			err = a.api.stream(ctx, func() int64 {
				heldMu.Lock()
				defer heldMu.Unlock()
				if delta {
					return since
				}
				return 0 // the whole set at once
			}, a.opts.PollWait, acks, func(ds *agentproto.DesiredSet, s bool) {
				got, streamed = true, s
				if s && ds.AckLine() {
					acks.results(ctx, ds.Acks)
					if ds.Beat != nil {
						acks.answer(*ds.Beat)
					}
					if ds.Error != "" {
						a.log.Warn("call manager ended the stream over what its body carried; sending it again", "err", ds.Error)
					}
					return
				}
				if !s {
					owed = take(ds) // an older server: they ride the next poll
					return
				}
				heldMu.Lock()
				merge(ds)
				heldMu.Unlock()
				select {
				case kick <- struct{}{}:
				default: // the applier takes the latest set when it is free
				}
			})
			close(kick)
			<-applied
			a.mu.Lock()
			a.stream = nil
			a.mu.Unlock()
			acks.finish()
			if status := statusOf(err); acks != nil && !got && status >= 400 && status < 500 &&
				status != http.StatusUnauthorized && status != http.StatusForbidden {
				// A call manager older than acks on the stream.
				a.mu.Lock()
				a.noAckStreamUntil = time.Now().Add(batchAckRetry)
				a.mu.Unlock()
				a.log.Info("server takes no acks on the stream; acking on the heartbeats", "answer", err)
				continue
			}
			if err == nil {
				bo.reset()
				disabled = a.enabledAgain(disabled)
				if got && !streamed {
					a.mu.Lock()
					a.noStreamUntil = time.Now().Add(batchAckRetry)
					a.mu.Unlock()
					a.log.Info("server does not stream deliveries; long-polling")
				}
				// A server that ends streams without waiting would
				// otherwise make this loop spin.
				if !got && time.Since(asked) < a.opts.MinBackoff && !a.sleep(ctx, a.opts.MinBackoff, false) {
					return nil
				}
				continue
			}
		} else {
			// Acks go with the poll when the server takes them there (every
			// call manager of this version); else, and when there are more
			// than one request may carry, on their own first.
			if len(owed) > 0 && a.pollAcks() && len(owed) <= agentproto.MaxAckBatch {
				carried = owed
			} else if len(owed) > 0 {
				if err := a.sendAcks(ctx, owed); err != nil {
					return err
				}
			}
			owed = nil
			wait := a.opts.PollWait
			// Acks carried by this poll get their answers with it; others
			// still outstanding shorten it, so the set comes back soon and
			// they are sent again.
			if len(carried) == 0 && a.hasUnacked() {
				wait = min(wait, ackRetryWait)
			}
			resp, err = a.api.assignments(ctx, since, wait, delta, ackItems(carried))
		}
		var delay time.Duration
		switch status := statusOf(err); {
		case err == nil:
			bo.reset()
			disabled = a.enabledAgain(disabled)
			if err := a.ackResults(ctx, carried, resp.Acks); err != nil {
				return err
			}
			unchanged := resp.Version == since
			owed = take(resp)
			// A server that answers an unchanged set without waiting would
			// otherwise make this loop spin.
			if !unchanged || time.Since(asked) >= a.opts.MinBackoff {
				continue
			}
			delay = a.opts.MinBackoff
		case ctx.Err() != nil:
			return nil
		case status == http.StatusUnauthorized:
			return ErrCredentialRejected
		case isPinMismatch(err):
			return err
		case len(carried) > 0 && (status == http.StatusMethodNotAllowed || status == http.StatusNotFound):
			// A call manager older than acks on the poll: send them on
			// their own, and poll as before for a while.
			a.mu.Lock()
			a.noPollAcksUntil = time.Now().Add(batchAckRetry)
			a.mu.Unlock()
			a.log.Info("server takes no acks on the poll; sending them on their own", "acks", len(carried))
			owed = carried
			continue
		case status == http.StatusForbidden:
			delay = bo.next()
			if !disabled {
				disabled = true
				a.log.Warn("node disabled by administrator; stopping its work", "running", a.count())
				a.stopAll(ctx)
			}
			since, held = 0, nil // ask for the whole set at once when enabled again
		default:
			owed = append(owed, carried...) // they ride the next try
			delay = bo.next()
			a.log.Warn("assignment poll failed", "err", err, "retry_in", delay.Round(time.Millisecond))
			// A heartbeat getting through again ends the wait: the call
			// managers are back, and moved work should not wait out a
			// long backoff.
			select {
			case <-a.reached:
			default:
			}
			if !a.sleepUntilReached(ctx, delay) {
				return nil
			}
			continue
		}
		if !a.sleep(ctx, delay, false) {
			return nil
		}
	}
}

// enabledAgain logs that a disabled node answers again and returns false
// (no longer disabled).
func (a *agent) enabledAgain(disabled bool) bool {
	if disabled {
		a.log.Info("node enabled again")
	}
	return false
}

// deltaAfter bounds the gap between two answers after which an agent asks
// for the whole set rather than a delta; resyncEvery is how often it takes
// the whole set anyway.
const (
	deltaAfter  = time.Minute + agentproto.MaxPollWait
	resyncEvery = 5 * time.Minute
)

func byID(a, b agentproto.Assignment) int { return cmp.Compare(a.ID, b.ID) }

// isPinMismatch reports a server whose key no longer matches the stored
// pin. That needs an operator (a re-keyed call manager means re-joining), so
// Run ends with the reason instead of retrying forever in silence.
func isPinMismatch(err error) bool {
	var pe *agentproto.PinMismatchError
	return errors.As(err, &pe)
}

func (a *agent) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

func (a *agent) hasUnacked() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.running {
		if !l.acked {
			return true
		}
	}
	return false
}

// apply makes the running set match the desired set and returns the acks
// that owes the server: starts (active or failed) and running work the
// server still has as assigned. Failures are logged and retried on a later
// delivery.
func (a *agent) apply(ctx context.Context, desired []agentproto.Assignment) []pendingAck {
	want := make(map[int64]agentproto.Assignment, len(desired))
	order := make([]int64, 0, len(desired))
	for _, d := range desired {
		if _, dup := want[d.ID]; !dup {
			order = append(order, d.ID)
		}
		want[d.ID] = d
	}
	var stops, starts, acks []agentproto.Assignment
	a.mu.Lock()
	for id, epoch := range a.dead {
		if d, ok := want[id]; !ok || d.Epoch != epoch {
			delete(a.dead, id)
		}
	}
	for id, l := range a.running {
		if _, ok := want[id]; !ok {
			stops = append(stops, l.Assignment)
		}
	}
	for _, id := range order {
		d := want[id]
		l, running := a.running[id]
		switch {
		case running && l.Epoch == d.Epoch:
			l.Cost = d.Cost
			if !l.acked {
				if d.State == agentproto.StateActive {
					l.acked = true // an earlier ack reached the server
				} else {
					acks = append(acks, d)
				}
			}
		case !running && a.isDead(d):
		default:
			starts = append(starts, d)
		}
	}
	a.mu.Unlock()

	// Stops go first so that freed resources are available to new work.
	_ = each(stops, func(x agentproto.Assignment) error { a.stop(ctx, x, "removed from the desired set"); return nil })
	// Then the start hooks; the acks they owe are returned, to go together.
	var pmu sync.Mutex
	pending := make([]pendingAck, 0, len(starts)+len(acks))
	_ = each(starts, func(x agentproto.Assignment) error {
		if p, ok := a.start(ctx, x); ok {
			pmu.Lock()
			pending = append(pending, p)
			pmu.Unlock()
		}
		return nil
	})
	for _, d := range acks {
		pending = append(pending, pendingAck{d: d, state: agentproto.StateActive})
	}
	return pending
}

// stillOwed drops the active acks of items a result marked acked while
// the set that owed them was being applied.
func (a *agent) stillOwed(pending []pendingAck) []pendingAck {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.DeleteFunc(pending, func(p pendingAck) bool {
		l, running := a.running[p.d.ID]
		return p.state == agentproto.StateActive && running && l.acked && l.Epoch == p.d.Epoch
	})
}

// sendAcks sends the acks one delivery owes: several in batch requests,
// one (or all, to a server without the batch API) one by one. It only
// returns ErrCredentialRejected.
func (a *agent) sendAcks(ctx context.Context, pending []pendingAck) error {
	if len(pending) > 1 && a.batchAcks() {
		var err error
		if pending, err = a.sendAckBatches(ctx, pending); err != nil {
			return err
		}
	}
	return each(pending, func(p pendingAck) error {
		return a.ackDone(ctx, p, a.api.ack(ctx, p.d.ID, p.state, p.d.Epoch, p.reason))
	})
}

func (a *agent) batchAcks() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return time.Now().After(a.noBatchUntil)
}

func (a *agent) pollAcks() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return time.Now().After(a.noPollAcksUntil)
}

// ackItems is the wire form of pending acks.
func ackItems(pending []pendingAck) []agentproto.Ack {
	if len(pending) == 0 {
		return nil
	}
	items := make([]agentproto.Ack, len(pending))
	for i, p := range pending {
		items[i] = agentproto.Ack{ID: p.d.ID, Epoch: p.d.Epoch, State: p.state, Error: p.reason}
	}
	return items
}

// ackResults acts on the server's results for acks sent together (in a
// batch, or on the poll). It only returns ErrCredentialRejected.
func (a *agent) ackResults(ctx context.Context, sent []pendingAck, res []agentproto.AckResult) error {
	byID := make(map[int64]agentproto.AckResult, len(res))
	for _, r := range res {
		byID[r.ID] = r
	}
	return each(sent, func(p pendingAck) error {
		r, ok := byID[p.d.ID]
		switch {
		case !ok:
			return a.ackDone(ctx, p, &statusError{Message: "no result for this ack in the answer"})
		case r.OK:
			return a.ackDone(ctx, p, nil)
		default:
			return a.ackDone(ctx, p, &statusError{Status: r.Status, Message: oneLine(r.Error, 200)})
		}
	})
}

// sendAckBatches sends pending in batch requests of at most agentproto.MaxAckBatch.
// It returns the acks still to send one by one: those from the first
// request a server without the batch API refused on.
func (a *agent) sendAckBatches(ctx context.Context, pending []pendingAck) ([]pendingAck, error) {
	for len(pending) > 0 {
		chunk := pending[:min(len(pending), agentproto.MaxAckBatch)]
		res, err := a.api.ackBatch(ctx, ackItems(chunk))
		switch status := statusOf(err); {
		case err == nil:
		case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
			a.mu.Lock()
			a.noBatchUntil = time.Now().Add(batchAckRetry)
			a.mu.Unlock()
			a.log.Info("server has no batch ack API; acking one by one", "acks", len(pending))
			return pending, nil
		case status == http.StatusUnauthorized:
			return nil, ErrCredentialRejected
		default:
			// Unacked active work is retried on the next delivery (the
			// poll is shortened while an ack is outstanding).
			if ctx.Err() == nil {
				a.log.Warn("batch ack failed; will retry", "acks", len(chunk), "err", err)
			}
			pending = pending[len(chunk):]
			continue
		}
		if err := a.ackResults(ctx, chunk, res); err != nil {
			return nil, err
		}
		pending = pending[len(chunk):]
	}
	return nil, nil
}

func (a *agent) isDead(d agentproto.Assignment) bool {
	epoch, ok := a.dead[d.ID]
	return ok && epoch == d.Epoch
}

// each runs fn for every item, a few at a time, and returns the first
// ErrCredentialRejected.
func each[T any](items []T, fn func(T) error) error {
	if len(items) == 0 {
		return nil
	}
	sem := make(chan struct{}, hookParallelism)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(it); err != nil {
				once.Do(func() { first = err })
			}
		})
	}
	wg.Wait()
	return first
}

// hookCtx keeps hooks running through shutdown: a start or stop cut in half
// is worse than a shutdown delayed by at most the hook timeout.
func (a *agent) hookCtx(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// start runs the start hook of d and returns the ack it owes the server:
// active, or failed when the hook failed; none for an assignment the
// server already knows as active.
func (a *agent) start(ctx context.Context, d agentproto.Assignment) (pendingAck, bool) {
	log := a.log.With("assignment", d.ID, "ref", d.Ref, "epoch", d.Epoch)
	if err := a.startWithRetry(ctx, log, d); err != nil {
		log.Error("start failed; acking failed so the server places it elsewhere", "err", err, "attempts", a.opts.HookAttempts)
		a.mu.Lock()
		delete(a.running, d.ID)
		a.dead[d.ID] = d.Epoch
		a.mu.Unlock()
		a.kickHeartbeat()
		return pendingAck{d: d, state: agentproto.StateFailed, reason: oneLine(err.Error(), 400)}, true
	}
	a.mu.Lock()
	a.running[d.ID] = &localAssignment{Assignment: d, acked: d.State == agentproto.StateActive}
	a.mu.Unlock()
	a.kickHeartbeat()
	if d.State == agentproto.StateActive {
		log.Info("adopted agentproto.Assignment the server already knows as active")
		return pendingAck{}, false
	}
	return pendingAck{d: d, state: agentproto.StateActive}, true
}

// startWithRetry runs the start hook of d up to HookAttempts times, with
// exponential backoff between tries, and returns the last error. A hook
// that fails for good thus costs the node a few seconds, not a hot loop:
// the server keeps the item off this node once the start is acked failed.
func (a *agent) startWithRetry(ctx context.Context, log *slog.Logger, d agentproto.Assignment) error {
	delay := a.opts.HookRetry
	var err error
	for attempt := 1; ; attempt++ {
		if err = runHook(a.hookCtx(ctx), a.log, a.opts.OnAssign, a.opts.HookTimeout, a.st.NodeName, actionStart, d); err == nil {
			return nil
		}
		if attempt >= a.opts.HookAttempts {
			return err
		}
		log.Warn("start hook failed; retrying", "err", err, "attempt", attempt, "retry_in", delay)
		if !a.sleep(ctx, delay, false) {
			return err
		}
		delay *= 2
	}
}

// ackDone acts on the server's answer to one ack, sent alone or in a
// batch. It only returns ErrCredentialRejected.
func (a *agent) ackDone(ctx context.Context, p pendingAck, err error) error {
	if p.state == agentproto.StateFailed {
		if err != nil {
			if statusOf(err) == http.StatusUnauthorized {
				return ErrCredentialRejected
			}
			if ctx.Err() == nil {
				a.log.Warn("ack failed", "assignment", p.d.ID, "ref", p.d.Ref, "epoch", p.d.Epoch, "state", agentproto.StateFailed, "err", err)
			}
		}
		return nil
	}
	return a.ackActiveDone(ctx, p.d, err)
}

func (a *agent) ackActiveDone(ctx context.Context, d agentproto.Assignment, err error) error {
	log := a.log.With("assignment", d.ID, "ref", d.Ref, "epoch", d.Epoch)
	switch statusOf(err) {
	case 0:
		if err == nil {
			a.mu.Lock()
			if l, ok := a.running[d.ID]; ok && l.Epoch == d.Epoch {
				l.acked = true
			}
			a.mu.Unlock()
			log.Info("assignment active")
			return nil
		}
	case http.StatusConflict, http.StatusNotFound:
		log.Warn("assignment no longer ours; dropping it", "reason", err)
		a.stop(ctx, d, "stale epoch")
		a.mu.Lock()
		a.dead[d.ID] = d.Epoch
		a.mu.Unlock()
		return nil
	case http.StatusUnauthorized:
		return ErrCredentialRejected
	}
	if ctx.Err() == nil {
		log.Warn("ack failed; will retry", "err", err)
	}
	return nil
}

// stop runs the stop hook and forgets the assignment, whatever the hook
// says: the server no longer wants it here.
func (a *agent) stop(ctx context.Context, d agentproto.Assignment, why string) {
	log := a.log.With("assignment", d.ID, "ref", d.Ref, "epoch", d.Epoch)
	if err := runHook(a.hookCtx(ctx), a.log, a.opts.OnAssign, a.opts.HookTimeout, a.st.NodeName, actionStop, d); err != nil {
		log.Error("stop hook failed", "err", err)
	}
	a.mu.Lock()
	if l, ok := a.running[d.ID]; ok && l.Epoch == d.Epoch {
		delete(a.running, d.ID)
	}
	a.mu.Unlock()
	a.kickHeartbeat()
	log.Info("assignment stopped", "why", why)
}

// stopAll stops everything running here (node disabled or removed).
func (a *agent) stopAll(ctx context.Context) {
	a.mu.Lock()
	all := make([]agentproto.Assignment, 0, len(a.running))
	for _, l := range a.running {
		all = append(all, l.Assignment)
	}
	a.mu.Unlock()
	_ = each(all, func(x agentproto.Assignment) error { a.stop(ctx, x, "node disabled or removed"); return nil })
}

// backoff yields jittered exponential delays between MinBackoff and
// MaxBackoff; the ±20% jitter keeps a fleet of agents from retrying in step
// after a call manager restart.
type backoff struct {
	min, max, cur time.Duration
}

func (a *agent) newBackoff() *backoff {
	return &backoff{min: a.opts.MinBackoff, max: a.opts.MaxBackoff}
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return time.Duration(float64(b.cur) * (0.8 + 0.4*rand.Float64()))
}

func (b *backoff) reset() { b.cur = 0 }
