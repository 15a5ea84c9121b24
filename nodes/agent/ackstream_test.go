package agent

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
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
