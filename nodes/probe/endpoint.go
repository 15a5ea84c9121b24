package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Endpoint serves the probe endpoint of one node kind, for a node agent whose node runs
// no real service on the probed address (nodeagent run --probe-listen ADDR).
type Endpoint struct {
	kind    string
	address string

	stop      func() error // closes the listeners and the sessions
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	stopWatch func() bool // detaches the ctx watcher

	sessions func() int // live WebRTC sessions (meeting only), for tests
}

// NewEndpoint starts serving the probe endpoint for a node of kind on listen (e.g.
// "127.0.0.1:0"):
//
//   - media, ivr, queue: a SIP UAS answering OPTIONS with 200 OK over UDP and TCP on the
//     same port;
//   - meeting: an HTTP server whose POST handler takes a JSON offer and answers with a
//     peer connection that echoes every data-channel message;
//   - im: a TCP listener that accepts connections and closes them.
//
// It listens before returning, so Address is known at once, and serves until Close is
// called or ctx ends.
func NewEndpoint(ctx context.Context, kind, listen string) (*Endpoint, error) {
	e := &Endpoint{kind: kind}
	switch kind {
	case KindMedia, KindIVR, KindQueue:
		s, err := newSIPEndpoint(listen)
		if err != nil {
			return nil, fmt.Errorf("probe endpoint %s on %s: %w", kind, listen, err)
		}
		e.address = s.address()
		e.stop = s.close
		e.goServe(s.serve)
	case KindMeeting:
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("probe endpoint %s on %s: %w", kind, listen, err)
		}
		m := newMeetingEndpoint()
		srv := &http.Server{
			Handler:           m,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       30 * time.Second,
			MaxHeaderBytes:    16 << 10,
		}
		e.address = "http://" + listenerHostPort(ln.Addr()) + "/"
		e.stop = func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := srv.Shutdown(sctx)
			if err != nil {
				err = srv.Close()
			}
			m.shutdown()
			return err
		}
		e.goServe(func() { _ = srv.Serve(ln) })
		e.sessions = m.sessions
	case KindIM:
		t, err := newTCPEndpoint(listen)
		if err != nil {
			return nil, fmt.Errorf("probe endpoint %s on %s: %w", kind, listen, err)
		}
		e.address = listenerHostPort(t.ln.Addr())
		e.stop = t.ln.Close
		e.goServe(t.serve)
	default:
		return nil, fmt.Errorf("probe endpoint: unknown node kind %q (want media, ivr, queue, meeting or im)", kind)
	}
	stopWatch := context.AfterFunc(ctx, func() { _ = e.Close() })
	e.mu.Lock()
	e.stopWatch = stopWatch
	e.mu.Unlock()
	return e, nil
}

func (e *Endpoint) goServe(serve func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		serve()
	}()
}

// Address is the node's service address in the DESIGN.md format for its kind:
// "127.0.0.1:PORT" (SIP over UDP; TCP is served on the same port), "http://127.0.0.1:PORT/"
// (meeting) or "127.0.0.1:PORT" (im). An unspecified listen host (0.0.0.0, ::) is reported
// as the loopback address.
func (e *Endpoint) Address() string { return e.address }

// Close stops serving, frees the port and waits for the endpoint's goroutines. It is safe
// to call more than once.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		stopWatch := e.stopWatch
		e.mu.Unlock()
		if stopWatch != nil {
			stopWatch()
		}
		err := e.stop()
		e.wg.Wait()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			e.closeErr = fmt.Errorf("close probe endpoint %s: %w", e.kind, err)
		}
	})
	return e.closeErr
}

// listenerHostPort is addr as clients dial it: an unspecified IP becomes loopback.
func listenerHostPort(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return hostPortForClients(ap.Addr().Unmap().String(), int(ap.Port()))
}

// hostPortForClients joins host and port, replacing an unspecified IP with loopback.
func hostPortForClients(host string, port int) string {
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		if ip.Is4() {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
