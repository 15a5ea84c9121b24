package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// newClient returns an HTTPS client bound to its own loopback source
// address (127.1.x.y), as if each agent ran on its own host; enrolment is
// throttled per source address.
func newClient(pin string, index int) (*http.Client, error) {
	tc, err := agentproto.PinnedTLSConfig(pin)
	if err != nil {
		return nil, err
	}
	var local net.Addr
	if index >= 0 {
		local = &net.TCPAddr{IP: net.IPv4(127, 1, byte(index/200), byte(index%200+1))}
	}
	d := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: tc,
		// Like nodeagent: HTTP/1.1 keep-alive (BENCH_H2=1 compares HTTP/2).
		ForceAttemptHTTP2:   os.Getenv("BENCH_H2") != "",
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 70 * time.Second}, nil
}

func doJSON(ctx context.Context, hc *http.Client, method, url, bearer string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		agentproto.SetBearer(req.Header, bearer)
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return res.StatusCode, err
	}
	if res.StatusCode/100 != 2 {
		return res.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, res.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return res.StatusCode, json.Unmarshal(b, out)
	}
	return res.StatusCode, nil
}

// recorder notes when assignments first reach an agent, by work id, and
// the agents' errors. (When acks landed is read from the database: see
// scene.activeWork.)
type recorder struct {
	mu       sync.Mutex
	received map[int64]time.Time
	errs     atomic.Int64
	lastErr  atomic.Value
}

func newRecorder() *recorder {
	return &recorder{received: map[int64]time.Time{}}
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.received = map[int64]time.Time{}
	r.mu.Unlock()
}

func (r *recorder) err(err error) {
	r.errs.Add(1)
	r.lastErr.Store(err.Error())
}

// simAgent speaks the real agent API: heartbeats once a second, long-polls
// its desired set, and acks every new assignment as active.
type simAgent struct {
	index  int
	nodeID int64
	name   string
	cred   string
	base   string
	hc     *http.Client
	rec    *recorder
	ack    bool
	cancel context.CancelFunc
	done   sync.WaitGroup
	polls  atomic.Int64
	beats  atomic.Int64
	// acks sent on stream bodies and on heartbeats
	streamAcks, beatAcks atomic.Int64
	// beats sent on stream bodies
	streamBeats atomic.Int64

	mu   sync.Mutex
	held map[int64]agentproto.Assignment // what this agent runs: its desired set as delivered
	owed []agentproto.Ack                // acks for the stream's body, or the next heartbeat
	kick chan struct{}                   // acks are owed
	// inflight are acks sent on the stream, by id, until their results come.
	inflight map[int64]inflightAck
	// lastOwed is when a delivery last owed acks; ackHeld says they are
	// held for the next heartbeat, -ack-hold at most.
	lastOwed time.Time
	ackHeld  bool
	// runningChanged makes the next heartbeat carry the running set.
	runningChanged bool
	// beatBody is the open POST stream's body, which carries the beats
	// (nil: they go in requests); beatAnswer brings their answers.
	beatBody   *io.PipeWriter
	beatAnswer chan agentproto.HeartbeatResponse
}

func enrollAgent(ctx context.Context, base, pin string, index int, token string, rec *recorder, ack bool) (*simAgent, error) {
	hc, err := newClient(pin, index)
	if err != nil {
		return nil, err
	}
	var er agentproto.EnrollResponse
	if _, err := doJSON(ctx, hc, http.MethodPost, base+agentproto.Prefix+agentproto.EnrollPath, "", agentproto.EnrollRequest{Token: token, Version: "bench"}, &er); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	return &simAgent{index: index, nodeID: er.NodeID, name: er.NodeName, cred: er.Credential, base: base, hc: hc, rec: rec, ack: ack, kick: make(chan struct{}, 1), beatAnswer: make(chan agentproto.HeartbeatResponse, 1), inflight: map[int64]inflightAck{}}, nil
}

// singleAcks makes the agents ack every assignment with its own request,
// as agents did before the batch ack API (the comparison figure). By
// default an agent acks the new assignments of one delivery like
// nodeagent: one batch request when there are several, else the single
// ack.
var singleAcks atomic.Bool

func (a *simAgent) start(ctx context.Context) {
	ctx, a.cancel = context.WithCancel(ctx)
	// The acks of deliveries, for ackLoop (when agents ack in requests).
	// A buffer of a hundred thousand slots per agent was a 2.4 MB object
	// full of pointers that the driver's garbage collector scanned in
	// every cycle, for each of a thousand agents: in some runs the driver
	// took most of a core from the call manager and Postgres under test.
	// A delivery waits for room instead.
	acks := make(chan []agentproto.Assignment, 64)
	a.done.Add(3)
	go func() { defer a.done.Done(); a.heartbeatLoop(ctx) }()
	go func() {
		defer a.done.Done()
		if !opt.longPoll {
			a.streamLoop(ctx, acks)
			return
		}
		a.pollLoop(ctx, acks)
	}()
	go func() { defer a.done.Done(); a.ackLoop(ctx, acks) }()
}

// kill stops the agent as if its host died: no goodbye, connections dropped.
func (a *simAgent) kill() {
	if a.cancel != nil {
		a.cancel()
	}
	a.done.Wait()
	a.hc.CloseIdleConnections()
}

func (a *simAgent) heartbeatLoop(ctx context.Context) {
	// Spread the agents' beats over the interval.
	first := time.Duration(a.index*7919%1000) * agentproto.HeartbeatInterval / 1000
	t := time.NewTimer(first)
	defer t.Stop()
	beat := 0
	var reported time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(agentproto.HeartbeatInterval)
		var out agentproto.HeartbeatResponse
		// Like nodeagent: the running set rides on a beat when it changed
		// (no oftener than ReconcileEvery) and on every FullReportEvery-th
		// beat.
		a.mu.Lock()
		report := beat%agentproto.FullReportEvery == 0 || (a.runningChanged && time.Since(reported) >= agentproto.ReconcileEvery)
		body := agentproto.HeartbeatRequest{Load: int32(len(a.held)), Version: "bench"}
		n := min(len(a.owed), agentproto.MaxAckBatch)
		body.Acks = a.owed[:n:n]
		a.owed = a.owed[n:]
		if report {
			a.runningChanged = false
			body.Running = make([]agentproto.Running, 0, len(a.held))
			for _, as := range a.held {
				body.Running = append(body.Running, agentproto.Running{ID: as.ID, Epoch: as.Epoch})
			}
			reported = time.Now()
		}
		a.mu.Unlock()
		beat++
		if out, ok := a.beatOnStream(body); ok {
			a.ackResults(out.Acks)
			a.beats.Add(1)
			a.streamBeats.Add(1)
			a.beatAcks.Add(int64(len(body.Acks)))
			continue
		}
		if _, err := doJSON(ctx, a.hc, http.MethodPost, a.base+agentproto.Prefix+agentproto.HeartbeatPath, a.cred, body, &out); err != nil {
			if ctx.Err() == nil {
				a.rec.err(err)
			}
			if len(body.Acks) > 0 { // they ride the next beat
				a.mu.Lock()
				a.owed = append(body.Acks, a.owed...)
				a.mu.Unlock()
			}
			continue
		}
		a.ackResults(out.Acks)
		a.beats.Add(1)
		a.beatAcks.Add(int64(len(body.Acks)))
	}
}

// beatOnStream sends a beat on the open POST stream's body, like
// nodeagent, and waits (bounded) for its answer; false: it goes in a
// request of its own.
func (a *simAgent) beatOnStream(body agentproto.HeartbeatRequest) (agentproto.HeartbeatResponse, bool) {
	a.mu.Lock()
	pw := a.beatBody
	a.mu.Unlock()
	if pw == nil {
		return agentproto.HeartbeatResponse{}, false
	}
	select {
	case <-a.beatAnswer: // late, for an earlier beat
	default:
	}
	line, _ := json.Marshal(agentproto.StreamLine{Beat: &body})
	if _, err := pw.Write(append(line, '\n')); err != nil {
		return agentproto.HeartbeatResponse{}, false
	}
	t := time.NewTimer(agentproto.HeartbeatInterval)
	defer t.Stop()
	select {
	case out := <-a.beatAnswer:
		return out, true
	case <-t.C:
		return agentproto.HeartbeatResponse{}, false
	}
}

// streamLoop takes the deliveries as a stream (like nodeagent): one
// request open at a time, a line per delivery; the acks ride the next
// heartbeat (singleAcks: each in a request of its own).
func (a *simAgent) streamLoop(ctx context.Context, acks chan<- []agentproto.Assignment) {
	var since int64
	var held map[int64]agentproto.Assignment
	for ctx.Err() == nil {
		err := a.stream(ctx, &since, &held, acks)
		if err != nil && ctx.Err() == nil {
			a.rec.err(err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (a *simAgent) stream(ctx context.Context, since *int64, held *map[int64]agentproto.Assignment, acks chan<- []agentproto.Assignment) error {
	// Like nodeagent: a POST stream, which carries the acks of a delivery
	// after a quiet spell (-heartbeat-acks: a GET stream).
	method, body := http.MethodGet, io.Reader(nil)
	var pw *io.PipeWriter
	duplex := a.ack && !opt.hbAcks
	if duplex {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		method, body = http.MethodPost, pr
		// Like nodeagent: the body ends with the request, or Go's
		// transport would wait for it before giving up on the request.
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		context.AfterFunc(rctx, func() { _ = pr.CloseWithError(context.Cause(rctx)) })
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+agentproto.Prefix+agentproto.StreamPath(*since, agentproto.DefaultPollWait), body)
	if err != nil {
		return err
	}
	if duplex {
		// A body of unknown length, sent as it comes: without this the
		// client waits up to 200 ms for its first byte before sending
		// the request.
		req.ContentLength = -1
	}
	agentproto.SetBearer(req.Header, a.cred)
	if duplex {
		req.Header.Set("Content-Type", agentproto.StreamContentType)
		sctx, stop := context.WithCancel(ctx)
		var writer sync.WaitGroup
		writer.Go(func() { a.writeAcks(sctx, pw) })
		if !opt.requestBeats {
			a.mu.Lock()
			a.beatBody = pw
			a.mu.Unlock()
		}
		defer func() {
			a.mu.Lock()
			a.beatBody = nil
			a.mu.Unlock()
			// The body ends with the answer; acks sent without a result
			// ride the next heartbeat or stream.
			pw.Close()
			stop()
			writer.Wait()
			a.mu.Lock()
			for _, x := range a.inflight {
				a.owed = append(a.owed, x.Ack)
			}
			clear(a.inflight)
			a.mu.Unlock()
		}()
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		return fmt.Errorf("stream: %d %s", res.StatusCode, strings.TrimSpace(string(b)))
	}
	dec := json.NewDecoder(res.Body)
	for {
		var ds agentproto.DesiredSet
		if err := dec.Decode(&ds); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if ds.AckLine() {
			a.mu.Lock()
			for _, r := range ds.Acks {
				if x, ok := a.inflight[r.ID]; ok {
					ackRTT.add(time.Since(x.sent))
				}
				delete(a.inflight, r.ID)
			}
			a.mu.Unlock()
			a.ackResults(ds.Acks)
			if ds.Beat != nil {
				select {
				case a.beatAnswer <- *ds.Beat:
				default:
				}
			}
			if ds.Error != "" {
				return errors.New(ds.Error)
			}
			if ds.End {
				pw.Close() // results of acks on their way may follow
			}
			continue
		}
		at := time.Now()
		a.polls.Add(1)
		*since = ds.Version
		fresh := a.take(ds, held)
		a.record(fresh, at)
		if a.ack && singleAcks.Load() {
			select {
			case acks <- fresh:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else if a.ack {
			// Like nodeagent: the acks go at once on the stream after a
			// quiet spell (the last delivery that owed acks came a
			// heartbeat interval ago or more), else ride the next
			// heartbeat if it comes within the hold, or go on the stream
			// then (-ack-hold 0: they always wait for the heartbeat).
			a.mu.Lock()
			owes := false
			for _, as := range fresh {
				if as.State == agentproto.StateAssigned {
					a.owed = append(a.owed, agentproto.Ack{ID: as.ID, Epoch: as.Epoch, State: agentproto.StateActive})
					owes = true
				}
			}
			quiet := owes && time.Since(a.lastOwed) >= agentproto.HeartbeatInterval
			hold := owes && !quiet && !a.ackHeld && opt.ackHold > 0
			if owes {
				a.lastOwed = time.Now()
			}
			a.ackHeld = a.ackHeld || hold
			a.mu.Unlock()
			if duplex && quiet {
				a.kickAcks()
			}
			if duplex && hold {
				time.AfterFunc(opt.ackHold, func() {
					a.mu.Lock()
					a.ackHeld = false
					a.mu.Unlock()
					a.kickAcks()
				})
			}
		}
	}
}

// kickAcks tells the stream's body that acks are owed.
func (a *simAgent) kickAcks() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// inflightAck is an ack sent on a stream and when.
type inflightAck struct {
	agentproto.Ack
	sent time.Time
}

// ackRTT is how long acks sent on streams took to have their results.
var ackRTT latencies

// writeAcks writes the owed acks to a POST stream's body as they fall
// due, one line per write, until ctx ends. They are in flight until their
// results come back.
func (a *simAgent) writeAcks(ctx context.Context, body io.Writer) {
	for first := true; ; first = false {
		if !first { // acks owed from an earlier stream go at once
			select {
			case <-ctx.Done():
				return
			case <-a.kick:
			}
		}
		a.mu.Lock()
		n := min(len(a.owed), agentproto.MaxAckBatch)
		line := agentproto.AckBatchRequest{Acks: a.owed[:n:n]}
		a.owed = a.owed[n:]
		now := time.Now()
		for _, x := range line.Acks {
			a.inflight[x.ID] = inflightAck{x, now}
		}
		a.mu.Unlock()
		if n == 0 {
			continue
		}
		b, _ := json.Marshal(line)
		if _, err := body.Write(append(b, '\n')); err != nil {
			return // the stream is over: its end puts them back
		}
		a.streamAcks.Add(int64(n))
	}
}

// take applies a delivery to the held set and returns what is new in it.
func (a *simAgent) take(ds agentproto.DesiredSet, held *map[int64]agentproto.Assignment) []agentproto.Assignment {
	// What is new, against what was held before this delivery; the
	// set is then updated in place (the heartbeat reads it under mu).
	var fresh []agentproto.Assignment
	for _, as := range ds.Assignments {
		if old, ok := (*held)[as.ID]; !ok || old.Epoch != as.Epoch {
			fresh = append(fresh, as)
		}
	}
	a.mu.Lock()
	*held = ds.Apply(*held)
	a.held = *held
	a.runningChanged = true
	a.mu.Unlock()
	return fresh
}

// record notes when fresh assignments first reached an agent.
func (a *simAgent) record(fresh []agentproto.Assignment, at time.Time) {
	if len(fresh) == 0 {
		return
	}
	a.rec.mu.Lock()
	for _, as := range fresh {
		if _, ok := a.rec.received[as.ID]; !ok {
			a.rec.received[as.ID] = at
		}
	}
	a.rec.mu.Unlock()
}

func (a *simAgent) pollLoop(ctx context.Context, acks chan<- []agentproto.Assignment) {
	var since int64
	var held map[int64]agentproto.Assignment // the desired set as delivered
	var owed []agentproto.Assignment         // acks that ride the next poll
	for ctx.Err() == nil {
		var ds agentproto.DesiredSet
		// Like nodeagent: deltas after the first whole set (-full-sets: the
		// whole set every time, as before deltas), and the acks of the last
		// delivery on the next poll (-ack-requests: in requests of their
		// own, as before).
		path := agentproto.PollPath(since, agentproto.DefaultPollWait, !opt.fullSets && held != nil)
		method, body := http.MethodGet, any(nil)
		if len(owed) > 0 {
			method, body = http.MethodPost, ackBatch(owed)
		}
		_, err := doJSON(ctx, a.hc, method, a.base+agentproto.Prefix+path, a.cred, body, &ds)
		at := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				a.rec.err(err)
				time.Sleep(100 * time.Millisecond)
			}
			continue // the owed acks ride the next try
		}
		owed = nil
		a.ackResults(ds.Acks)
		a.polls.Add(1)
		since = ds.Version
		fresh := a.take(ds, &held)
		if len(fresh) == 0 {
			continue
		}
		a.record(fresh, at)
		if a.ack {
			for _, as := range fresh {
				if as.State == agentproto.StateAssigned {
					owed = append(owed, as)
				}
			}
			if len(owed) > 0 && (singleAcks.Load() || opt.ackRequests) {
				select {
				case acks <- owed:
				case <-ctx.Done():
					return
				}
				owed = nil
			}
		}
	}
}

func (a *simAgent) ackLoop(ctx context.Context, acks <-chan []agentproto.Assignment) {
	for {
		var owed []agentproto.Assignment
		select {
		case <-ctx.Done():
			return
		case owed = <-acks:
		}
		if singleAcks.Load() || len(owed) == 1 {
			for _, as := range owed {
				a.ackOne(ctx, as)
			}
			continue
		}
		// Acks owed by deliveries that arrived meanwhile join this batch.
	more:
		for len(owed) < agentproto.MaxAckBatch {
			select {
			case next := <-acks:
				owed = append(owed, next...)
			default:
				break more
			}
		}
		for len(owed) > 0 {
			n := min(len(owed), agentproto.MaxAckBatch)
			a.ackBatch(ctx, owed[:n])
			owed = owed[n:]
		}
	}
}

func (a *simAgent) ackOne(ctx context.Context, as agentproto.Assignment) {
	url := a.base + agentproto.Prefix + agentproto.AckPath(as.ID)
	_, err := doJSON(ctx, a.hc, http.MethodPost, url, a.cred, agentproto.AckRequest{State: agentproto.StateActive, Epoch: as.Epoch}, nil)
	if err != nil {
		if ctx.Err() == nil && !strings.Contains(err.Error(), "409") {
			a.rec.err(err)
		}
	}
}

// ackBatch is the body that acks owed active.
func ackBatch(owed []agentproto.Assignment) agentproto.AckBatchRequest {
	body := agentproto.AckBatchRequest{Acks: make([]agentproto.Ack, len(owed))}
	for i, as := range owed {
		body.Acks[i] = agentproto.Ack{ID: as.ID, Epoch: as.Epoch, State: agentproto.StateActive}
	}
	return body
}

// ackBatch acks many assignments with one POST of agentproto.AckBatchPath.
func (a *simAgent) ackBatch(ctx context.Context, owed []agentproto.Assignment) {
	var out agentproto.AckBatchResponse
	_, err := doJSON(ctx, a.hc, http.MethodPost, a.base+agentproto.Prefix+agentproto.AckBatchPath, a.cred, ackBatch(owed), &out)
	if err != nil {
		if ctx.Err() == nil {
			a.rec.err(err)
		}
		return
	}
	a.ackResults(out.Results)
}

// ackResults notes the acks the server refused for another reason than a
// stale epoch (work moved meanwhile).
func (a *simAgent) ackResults(results []agentproto.AckResult) {
	for _, r := range results {
		if !r.OK && !strings.Contains(r.Error, "stale epoch") {
			a.rec.lastErr.Store(r.Error)
		}
	}
}
