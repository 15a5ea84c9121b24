package sipfront_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Real SIP peers for the tests, on loopback: media nodes built on sipgo
// (and a silent one on a bare UDP socket) and a sipgo caller.

// mediaMode is how a media node answers INVITEs.
type mediaMode int32

const (
	modeAnswer mediaMode = iota // 180, then 200
	modeBusy                    // 503
	modeRing                    // 180 and nothing more until CANCEL
)

// media is a sipgo media server standing in for a media node.
type media struct {
	addr     string
	mode     atomic.Int32
	mu       sync.Mutex
	methods  map[sip.RequestMethod]int
	callIDs  map[string]int // INVITEs per Call-ID
	cancelCh chan struct{}  // closed at the first CANCEL seen (tx ended by CANCEL)
	cancelMu sync.Once
}

func startMedia(t *testing.T, mode mediaMode) *media {
	t.Helper()
	m := &media{methods: map[sip.RequestMethod]int{}, callIDs: map[string]int{}, cancelCh: make(chan struct{})}
	m.mode.Store(int32(mode))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("media-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = conn.LocalAddr().String()
	host, portStr, _ := net.SplitHostPort(m.addr)
	port, _ := strconv.Atoi(portStr)
	count := func(req *sip.Request) {
		m.mu.Lock()
		m.methods[req.Method]++
		if req.IsInvite() {
			m.callIDs[req.CallID().Value()]++
		}
		m.mu.Unlock()
	}
	respond := func(tx sip.ServerTransaction, req *sip.Request, code int, reason string, toTag string) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		if toTag != "" {
			res.To().Params.Add("tag", toTag)
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "media", Host: host, Port: port}})
		}
		_ = tx.Respond(res)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) { count(req); respond(tx, req, 200, "OK", "") })
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { count(req) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) { count(req); respond(tx, req, 200, "OK", "") })
	srv.OnInfo(func(req *sip.Request, tx sip.ServerTransaction) { count(req); respond(tx, req, 200, "OK", "") })
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		count(req)
		tag := sip.GenerateTagN(8)
		switch mediaMode(m.mode.Load()) {
		case modeBusy:
			respond(tx, req, 503, "Service Unavailable", "")
		case modeRing:
			respond(tx, req, 180, "Ringing", tag)
			select {
			case <-tx.Done():
				m.cancelMu.Do(func() { close(m.cancelCh) })
			case <-time.After(60 * time.Second):
			}
		default:
			respond(tx, req, 180, "Ringing", tag)
			respond(tx, req, 200, "OK", tag)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ServeUDP(conn)
	t.Cleanup(func() { cancel(); conn.Close(); ua.Close() })
	_ = ctx
	return m
}

func (m *media) count(method sip.RequestMethod) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.methods[method]
}

// silentMedia answers OPTIONS probes (so the node is up) but never
// answers an INVITE, not even with 100 Trying: a node whose call handling
// hangs. A bare socket, because a sipgo server transaction sends 100
// Trying by itself.
func silentMedia(t *testing.T) (addr string, invites *atomic.Int64) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	invites = &atomic.Int64{}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
			if err != nil {
				continue
			}
			req, ok := msg.(*sip.Request)
			if !ok {
				continue
			}
			switch req.Method {
			case sip.OPTIONS:
				res := sip.NewResponseFromRequest(req, 200, "OK", nil)
				_, _ = conn.WriteTo([]byte(res.String()), from)
			case sip.INVITE:
				invites.Add(1)
			}
		}
	}()
	return conn.LocalAddr().String(), invites
}

// caller is a sipgo user agent placing calls through the front door.
type caller struct {
	ua     *sipgo.UserAgent
	client *sipgo.Client
	dialog sipgo.DialogUA
}

func newCaller(t *testing.T) *caller {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("caller-test"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return &caller{ua: ua, client: client, dialog: sipgo.DialogUA{
		Client:     client,
		ContactHDR: sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "caller", Host: "127.0.0.1", Port: 5090}},
	}}
}

// target is the Request-URI of a call through the front door at addr.
func target(addr string) sip.Uri {
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	return sip.Uri{Scheme: "sip", User: "service", Host: host, Port: port}
}

// do sends one out-of-dialog request and returns its final response.
func (c *caller) do(t *testing.T, method sip.RequestMethod, addr string, headers ...sip.Header) *sip.Response {
	t.Helper()
	req := sip.NewRequest(method, target(addr))
	for _, h := range headers {
		req.AppendHeader(h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.client.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s to the front door: %v", method, err)
	}
	return res
}
