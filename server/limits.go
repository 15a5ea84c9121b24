package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/problem"
)

// Body limits. Forms and single JSON objects are small; the batch routes
// and a heartbeat carrying the running set of a large node are not.
const (
	DefaultBodyLimit = 64 << 10
	LargeBodyLimit   = 1 << 20
)

// largeBodyRoutes take LargeBodyLimit; every other route DefaultBodyLimit.
var largeBodyRoutes = map[string]bool{
	"POST " + agentproto.Prefix + agentproto.HeartbeatPath:   true,
	"POST " + agentproto.Prefix + agentproto.AckBatchPath:    true,
	"POST " + agentproto.Prefix + agentproto.AssignmentsPath: true,
	"POST /api/v1/work": true,
}

// BodyLimit is the largest body a request to method and path may send.
func BodyLimit(method, path string) int64 {
	if largeBodyRoutes[method+" "+strings.TrimSuffix(path, "/")] {
		return LargeBodyLimit
	}
	return DefaultBodyLimit
}

// limitBody bounds each request body in size (BodyLimit: 413 beyond it)
// and in time: the whole body must arrive within timeout of the request's
// start, so a client trickling a body a byte at a time cannot hold a
// connection and a goroutine for long. The read deadline is lifted once
// the body is read, so it never cuts a long-poll short.
func limitBody(timeout time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isAckStream(r) {
				serveAckStream(w, r, next)
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				rc := http.NewResponseController(w)
				_ = rc.SetReadDeadline(time.Now().Add(timeout))
				r.Body = &deadlineBody{ReadCloser: http.MaxBytesReader(w, r.Body, BodyLimit(r.Method, r.URL.Path)), rc: rc}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// isAckStream reports a POST stream of the agent API, whose body is the
// agent's acks while the answer streams (agentproto.QueryStream).
func isAckStream(r *http.Request) bool {
	if r.Method != http.MethodPost || strings.TrimSuffix(r.URL.Path, "/") != agentproto.Prefix+agentproto.AssignmentsPath {
		return false
	}
	stream, err := strconv.ParseBool(r.URL.Query().Get(agentproto.QueryStream))
	return err == nil && stream
}

// serveAckStream serves a POST stream, whose body (the agent's acks)
// lasts as long as its answer: the two go at once (full duplex), so no
// answer waits for the body's end, as Go's server otherwise makes it. The
// body is bounded per line by the stream (Server.streamAcks) and as a
// whole by the longest stream and the time to end it. An answer that
// leaves the body unread to its end (a refusal, an error, an agent that
// keeps its body open) closes the connection: Go's server cannot yet
// reuse a full-duplex connection whose body ends after the handler.
func serveAckStream(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		writeError(w, err)
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(agentproto.MaxPollWait + 2*streamWriteTimeout))
	body := &eofBody{ReadCloser: r.Body}
	r.Body = body
	next.ServeHTTP(w, r)
	if !body.eof.Load() {
		_ = rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			_ = conn.Close()
		}
	}
}

// eofBody notes when its reader has seen the body's end.
type eofBody struct {
	io.ReadCloser
	eof atomic.Bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// ParseTrustedProxies reads a comma-separated list of CIDRs or addresses.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			a, err := netip.ParseAddr(item)
			if err != nil {
				return nil, errors.New("trusted proxies: " + item + " is not an address or CIDR")
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, errors.New("trusted proxies: " + item + " is not an address or CIDR")
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

type proxies []netip.Prefix

func (ps proxies) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		a, err := netip.ParseAddr(remote)
		return a.Unmap(), err == nil
	}
	return ap.Addr().Unmap(), true
}

// clientAddr sets r.RemoteAddr to the client's address. A request from a
// listed proxy is taken to come from the right-most address of its
// X-Forwarded-For that is not itself a listed proxy; from anyone else
// X-Forwarded-For is ignored (and removed), so a client cannot choose the
// address it is throttled and audited under.
func clientAddr(trusted proxies) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			xff := r.Header.Values("X-Forwarded-For")
			if len(xff) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			r.Header.Del("X-Forwarded-For")
			peer, ok := peerAddr(r.RemoteAddr)
			if !ok || !trusted.trusted(peer) {
				next.ServeHTTP(w, r)
				return
			}
			hops := strings.Split(strings.Join(xff, ","), ",")
			client := peer
			for i := len(hops) - 1; i >= 0; i-- {
				a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
				if err != nil {
					break // a garbled hop: trust nothing further left
				}
				client = a.Unmap()
				if !trusted.trusted(client) {
					break
				}
			}
			r2 := r.Clone(r.Context())
			r2.RemoteAddr = netip.AddrPortFrom(client, 0).String()
			next.ServeHTTP(w, r2)
		})
	}
}

// connLimiter caps the open connections of each client address, so one
// client cannot hold every connection (slow bodies, idle keep-alives).
// Listed proxies carry many clients and are not capped.
type connLimiter struct {
	net.Listener
	max     int
	trusted proxies
	onDrop  func(addr string)
	mu      sync.Mutex
	open    map[netip.Addr]int
}

func newConnLimiter(ln net.Listener, max int, trusted proxies, onDrop func(string)) net.Listener {
	if max <= 0 {
		return ln
	}
	return &connLimiter{Listener: ln, max: max, trusted: trusted, onDrop: onDrop, open: map[netip.Addr]int{}}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a, ok := peerAddr(c.RemoteAddr().String())
		if !ok || l.trusted.trusted(a) {
			return c, nil
		}
		l.mu.Lock()
		if l.open[a] >= l.max {
			l.mu.Unlock()
			_ = c.Close()
			if l.onDrop != nil {
				l.onDrop(a.String())
			}
			continue
		}
		l.open[a]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(a) }}, nil
	}
}

func (l *connLimiter) release(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[a]--; l.open[a] <= 0 {
		delete(l.open, a)
	}
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// authFailure is the error an authentication failure answers with: one
// generic 401 for every bad credential, but the real error (503 while the
// database is unreachable) when the check itself could not be made.
func authFailure(err error) error {
	if errors.Is(err, problem.ErrUnauthorized) {
		return problem.ErrUnauthorized
	}
	return err
}

// connDropped logs refused connections, at most once per 10 s, so a flood
// does not flood the log too.
func (s *Server) connDropped() func(addr string) {
	var mu sync.Mutex
	var last time.Time
	dropped := 0
	return func(addr string) {
		mu.Lock()
		defer mu.Unlock()
		dropped++
		if time.Since(last) < 10*time.Second {
			return
		}
		s.log.Warn("connections refused: too many open from one client address", "remote", addr,
			"refused", dropped, "max_per_client", s.cfg.MaxConnsPerClient)
		last, dropped = time.Now(), 0
	}
}
