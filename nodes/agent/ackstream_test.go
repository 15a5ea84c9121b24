package agent

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// A call manager that takes a POST stream's request and never answers it
// (paused, say): the try still ends at its timeout. Go's transport waits
// for a request body's copy to end before it gives up on the request,
// and a stream's body is a pipe only the agent ends.
func TestStreamTryEndsWhileItsBodyIsOpen(t *testing.T) {
	release := make(chan struct{})
	srv, pin := startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // no answer, and the body left unread
	}), nil, nil)
	defer close(release)
	c, err := newAPIClient([]string{srv.URL}, pin, "", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	go func() {
		done <- c.once(t.Context(), time.Second, nil, srv.URL, http.MethodPost, "/api/v1/assignments?stream=1", nil, pr, nil)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errTryTimeout) {
			t.Fatalf("the try ended with %v, want its timeout", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a try of a stream with an open body did not end at its timeout (1 s) within a minute")
	}
}

// A busy node's acks (a delivery that owes some less than a heartbeat
// interval after the last) wait for the next beat, but not longer than
// agentproto.AckHold: then the stream's body is told to send them. A
// quiet node's are due at once.
func TestBusyAcksAreHeldNoLongerThanTheHold(t *testing.T) {
	a := &agent{acksDue: make(chan struct{}, 1)}
	ack := func(id int64) []pendingAck {
		return []pendingAck{{d: agentproto.Assignment{ID: id, Epoch: 1}, state: agentproto.StateActive}}
	}
	a.queueAcks(ack(1))
	select {
	case <-a.acksDue:
	default:
		t.Fatal("the first delivery's ack (after a quiet spell) is not due at once")
	}
	a.queueAcks(ack(2)) // busy: held for the beat
	a.queueAcks(ack(3)) // one hold covers both
	select {
	case <-a.acksDue:
	case <-time.After(time.Minute):
		t.Fatalf("a busy node's acks were held a minute, not %v at most", agentproto.AckHold)
	}
	a.mu.Lock()
	n := len(a.streamedAcks)
	a.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d acks queued, want the 3 (nothing took them)", n)
	}
}
