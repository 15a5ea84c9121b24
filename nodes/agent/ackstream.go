package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// ackStream is the body of a POST stream (agentproto.QueryStream): the
// acks streamed deliveries owe, written when the agent says they are due
// (agent.acksDue), a line each; their results come back as lines of the
// stream. Acks it has sent but has no result for when an attempt or the
// stream ends go back in the queue, first in line for the next stream or
// heartbeat.
type ackStream struct {
	a    *agent
	stop chan struct{}
	// writers are the goroutines writing the bodies, one per attempt.
	writers sync.WaitGroup

	mu       sync.Mutex
	pw       *io.PipeWriter       // the current attempt's body
	inflight map[int64]pendingAck // sent, by assignment id, until their results come
	// beats says the current attempt's body takes heartbeats (its call
	// manager has agentproto.FeatureBeatStream); answered brings their
	// answers, and gone closes when the attempt's answer is over.
	beats    bool
	answered chan agentproto.HeartbeatResponse
	gone     chan struct{}
}

func (a *agent) newAckStream() *ackStream {
	return &ackStream{a: a, stop: make(chan struct{}), inflight: map[int64]pendingAck{}, answered: make(chan agentproto.HeartbeatResponse, 1)}
}

// body opens the body of one attempt (a nil stream has none), which
// carries heartbeats when beats says so. The acks sent on an earlier
// attempt without results are queued again: that attempt got no answer.
func (s *ackStream) body(beats bool) io.Reader {
	if s == nil {
		return nil
	}
	pr, pw := io.Pipe()
	s.mu.Lock()
	old, oldGone := s.pw, s.gone
	s.pw, s.beats, s.gone = pw, beats, make(chan struct{})
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
		if oldGone != nil {
			close(oldGone)
		}
		s.requeue()
	}
	s.writers.Go(func() { s.write(pw) })
	return pr
}

// errNoBeat: the heartbeat did not go on the stream, or had no answer
// there in time; it goes in a request of its own.
var errNoBeat = errors.New("no heartbeat on the stream")

// beat sends a heartbeat on the current attempt's body, when it takes
// them, and waits at most timeout for its answer. Without one the
// attempt is ended (a call manager that does not answer a beat is no
// stream to wait on) and errNoBeat returned: the caller sends the beat in
// a request of its own, which also moves to the next call manager when
// this one is gone.
func (s *ackStream) beat(timeout time.Duration, req agentproto.HeartbeatRequest) (*agentproto.HeartbeatResponse, error) {
	if s == nil {
		return nil, errNoBeat
	}
	s.mu.Lock()
	pw, gone, ok := s.pw, s.gone, s.beats
	s.mu.Unlock()
	if !ok || pw == nil {
		return nil, errNoBeat
	}
	select {
	case <-s.answered: // a late answer to an earlier beat
	default:
	}
	line, err := json.Marshal(agentproto.StreamLine{Beat: &req})
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	written := make(chan error, 1)
	go func() {
		_, err := pw.Write(append(line, '\n'))
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			return nil, errNoBeat // the body is over: nothing went
		}
	case <-t.C:
		_ = pw.CloseWithError(errNoBeat)
		return nil, errNoBeat
	}
	select {
	case resp := <-s.answered:
		return &resp, nil
	case <-gone:
	case <-t.C:
		_ = pw.CloseWithError(errNoBeat)
	}
	return nil, errNoBeat
}

// answer hands a beat's answer, a line of the stream, to the beat waiting
// for it.
func (s *ackStream) answer(resp agentproto.HeartbeatResponse) {
	if s == nil {
		return
	}
	select {
	case s.answered <- resp:
	default: // nobody waits: the beat went in a request after all
	}
}

// write sends the queued acks on pw until the stream stops or the body
// is ended: at once what is queued, then whenever more is.
func (s *ackStream) write(pw *io.PipeWriter) {
	for {
		s.mu.Lock()
		current := s.pw == pw
		s.mu.Unlock()
		if !current {
			return
		}
		s.a.mu.Lock()
		n := min(len(s.a.streamedAcks), agentproto.MaxAckBatch)
		sent := s.a.streamedAcks[:n:n]
		s.a.streamedAcks = s.a.streamedAcks[n:]
		s.a.mu.Unlock()
		if n == 0 {
			select {
			case <-s.stop:
				return
			case <-s.a.acksDue:
				continue
			}
		}
		s.mu.Lock()
		for _, p := range sent {
			s.inflight[p.d.ID] = p
		}
		s.mu.Unlock()
		line, err := json.Marshal(agentproto.AckBatchRequest{Acks: ackItems(sent)})
		if err != nil {
			return
		}
		if _, err := pw.Write(append(line, '\n')); err != nil {
			// The body is over: they did not go.
			s.mu.Lock()
			for _, p := range sent {
				delete(s.inflight, p.d.ID)
			}
			s.mu.Unlock()
			s.a.unsent(sent, false)
			return
		}
	}
}

// notInFlight leaves out of pending the acks this stream has sent and has
// no result for yet. A delivery re-applies the whole held set, whose items
// show as assigned until their acks' results come, and the call manager
// holds a line of results for a send going anyway (a delivery, a beat's
// answer): acking them again would only cost a line and a statement.
func (s *ackStream) notInFlight(pending []pendingAck) []pendingAck {
	if s == nil {
		return pending
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(pending, func(p pendingAck) bool {
		q, ok := s.inflight[p.d.ID]
		return ok && q.d.Epoch == p.d.Epoch && q.state == p.state
	})
}

// end ends the current body: the call manager said End.
func (s *ackStream) end() {
	if s == nil {
		return
	}
	s.mu.Lock()
	pw := s.pw
	s.mu.Unlock()
	if pw != nil {
		_ = pw.Close()
	}
}

// results acts on a line of results (off the stream's reader: a stale
// epoch runs the stop hook).
func (s *ackStream) results(ctx context.Context, res []agentproto.AckResult) {
	if s == nil {
		return // a GET stream has none
	}
	s.mu.Lock()
	var sent []pendingAck
	for _, r := range res {
		if p, ok := s.inflight[r.ID]; ok {
			sent = append(sent, p)
			delete(s.inflight, r.ID)
		}
	}
	s.mu.Unlock()
	if len(sent) == 0 {
		return
	}
	// The items acked active are marked so before the next line is read:
	// a delivery that comes with these results (they wait for a send
	// going anyway) must not owe their acks again.
	ok := make(map[int64]bool, len(res))
	for _, r := range res {
		ok[r.ID] = r.OK
	}
	s.a.mu.Lock()
	for _, p := range sent {
		if l, running := s.a.running[p.d.ID]; running && ok[p.d.ID] && p.state == agentproto.StateActive && l.Epoch == p.d.Epoch {
			l.acked = true
		}
	}
	s.a.mu.Unlock()
	s.a.results.Go(func() { _ = s.a.ackResults(ctx, sent, res) }) // a 401 also ends the stream
}

// finish ends the stream's bodies and writers and queues again what had
// no result.
func (s *ackStream) finish() {
	if s == nil {
		return
	}
	close(s.stop)
	s.end()
	s.mu.Lock()
	if s.gone != nil {
		close(s.gone)
		s.gone = nil
	}
	s.mu.Unlock()
	s.writers.Wait()
	s.requeue()
}

// requeue puts the acks in flight back in the queue.
func (s *ackStream) requeue() {
	s.mu.Lock()
	back := make([]pendingAck, 0, len(s.inflight))
	for _, p := range s.inflight {
		back = append(back, p)
	}
	clear(s.inflight)
	s.mu.Unlock()
	s.a.unsent(back, false)
}
