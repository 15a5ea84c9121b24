package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/webrtc/v4"
)

// generous bounds a "fails within the timeout" assertion: the probe's own timeout plus
// ample slack for a loaded CI machine under -race.
const generous = 3 * time.Second

// newTestProber returns a Prober closed when the test ends.
func newTestProber(t *testing.T, cfg Config) *Prober {
	t.Helper()
	p, err := NewProber(cfg)
	if err != nil {
		t.Fatalf("NewProber: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Prober.Close: %v", err)
		}
	})
	return p
}

// newTestEndpoint starts an Endpoint of kind on a loopback port, closed when the test ends.
func newTestEndpoint(t *testing.T, kind string) *Endpoint {
	t.Helper()
	e, err := NewEndpoint(t.Context(), kind, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("NewEndpoint(%s): %v", kind, err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Endpoint.Close: %v", err)
		}
	})
	return e
}

// probeWithin runs one probe and fails the test if it takes longer than bound.
func probeWithin(t *testing.T, p *Prober, kind, address string, bound time.Duration) Result {
	t.Helper()
	start := time.Now()
	res := p.Probe(t.Context(), kind, address)
	if took := time.Since(start); took > bound {
		t.Fatalf("Probe(%s, %s) took %s; want at most %s (result %+v)", kind, address, took, bound, res)
	}
	if res.Latency <= 0 {
		t.Errorf("Probe(%s, %s) Latency = %s; want > 0", kind, address, res.Latency)
	}
	return res
}

func wantOK(t *testing.T, res Result) {
	t.Helper()
	if !res.OK {
		t.Fatalf("probe failed: %+v; want OK", res)
	}
}

func wantFail(t *testing.T, res Result, detailPart string) {
	t.Helper()
	if res.OK {
		t.Fatalf("probe succeeded: %+v; want failure", res)
	}
	if !strings.Contains(res.Detail, detailPart) {
		t.Fatalf("probe Detail = %q; want it to contain %q", res.Detail, detailPart)
	}
}

// deadUDPAddress returns a loopback UDP address nothing listens on.
func deadUDPAddress(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// deadTCPAddress returns a loopback TCP address nothing listens on.
func deadTCPAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// rawUDPPeer answers every datagram with reply(request) from a plain UDP socket, the way
// a broken or hostile SIP peer would.
func rawUDPPeer(t *testing.T, reply func(req []byte) []byte) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(bytes.Clone(buf[:n])); out != nil {
				_, _ = conn.WriteTo(out, from)
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return conn.LocalAddr().String()
}

// headerLines returns the request's header lines named name (full form, as sipgo sends).
func headerLines(req []byte, name string) []string {
	var out []string
	for line := range strings.SplitSeq(string(req), "\r\n") {
		if k, _, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			out = append(out, line)
		}
	}
	return out
}

// forgedResponse builds a response to req from its own headers, with callID replacing
// the request's Call-ID.
func forgedResponse(req []byte, status string, callID string) []byte {
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, h := range []string{"Via", "From"} {
		for _, l := range headerLines(req, h) {
			b.WriteString(l + "\r\n")
		}
	}
	for _, l := range headerLines(req, "To") {
		b.WriteString(l + ";tag=forged\r\n")
	}
	b.WriteString("Call-ID: " + callID + "\r\n")
	for _, l := range headerLines(req, "CSeq") {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// sipServer starts a sipgo UAS on loopback UDP+TCP answering OPTIONS with code.
func sipServer(t *testing.T, code int, reason string) (udpAddr, tcpAddr string) {
	t.Helper()
	ua, err := newUA("test-uas", discardLogger)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(discardLogger))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, reason, nil))
	})
	udp, tcp, err := listenSIP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeUDP(udp) })
	wg.Go(func() { _ = srv.ServeTCP(tcp) })
	t.Cleanup(func() {
		udp.Close()
		tcp.Close()
		_ = ua.Close()
		wg.Wait()
	})
	return udp.LocalAddr().String(), tcp.Addr().String()
}

func TestProbeHealthyEveryKind(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 5 * time.Second})
	for _, kind := range []string{KindMedia, KindIVR, KindQueue, KindMeeting, KindIM} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newTestEndpoint(t, kind)
			if err := ValidateAddress(kind, e.Address()); err != nil {
				t.Fatalf("endpoint Address %q is not a valid %s address: %v", e.Address(), kind, err)
			}
			res := probeWithin(t, p, kind, e.Address(), 5*time.Second+generous)
			wantOK(t, res)
			// A second probe reuses the shared state.
			wantOK(t, probeWithin(t, p, kind, e.Address(), 5*time.Second+generous))
		})
	}
}

func TestEndpointAddressFormats(t *testing.T) {
	t.Parallel()
	for kind, prefix := range map[string]string{KindMedia: "127.0.0.1:", KindMeeting: "http://127.0.0.1:", KindIM: "127.0.0.1:"} {
		e := newTestEndpoint(t, kind)
		if !strings.HasPrefix(e.Address(), prefix) {
			t.Errorf("%s endpoint Address = %q; want prefix %q", kind, e.Address(), prefix)
		}
	}
	if _, err := NewEndpoint(t.Context(), "fax", "127.0.0.1:0"); err == nil {
		t.Error("NewEndpoint(fax) succeeded; want unknown kind error")
	}
	if _, err := NewEndpoint(t.Context(), KindIM, "127.0.0.1:notaport"); err == nil {
		t.Error("NewEndpoint with a bad listen address succeeded")
	}
}

func TestEndpointStopsWithContext(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 300 * time.Millisecond})
	for _, kind := range []string{KindMedia, KindMeeting, KindIM} {
		ctx, cancel := context.WithCancel(t.Context())
		e, err := NewEndpoint(ctx, kind, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wantOK(t, probeWithin(t, p, kind, e.Address(), generous))
		cancel()
		if err := e.Close(); err != nil { // waits for the shutdown the context started
			t.Errorf("Close after cancel: %v", err)
		}
		wantFail(t, probeWithin(t, p, kind, e.Address(), 300*time.Millisecond+generous), "")
	}
}

func TestSIPClosedEndpointFailsWithinTimeout(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 300 * time.Millisecond})
	e, err := NewEndpoint(t.Context(), KindMedia, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, probeWithin(t, p, KindMedia, e.Address(), generous))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// UDP: nobody answers, the deadline ends the probe.
	wantFail(t, probeWithin(t, p, KindMedia, e.Address(), 300*time.Millisecond+generous), "timeout after 300ms")
	wantFail(t, probeWithin(t, p, KindMedia, deadUDPAddress(t), 300*time.Millisecond+generous), "timeout after 300ms")
	// TCP: the closed port refuses the connection.
	wantFail(t, probeWithin(t, p, KindMedia, "sip:"+e.Address()+";transport=tcp", 300*time.Millisecond+generous), "connection refused")
}

func TestSIPCallerDeadline(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := p.Probe(ctx, KindMedia, deadUDPAddress(t))
	if time.Since(start) > generous {
		t.Fatalf("probe ignored the caller's deadline: took %s", time.Since(start))
	}
	wantFail(t, res, "timeout after")
}

func TestSIPMisbehavingPeers(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 400 * time.Millisecond})
	tests := []struct {
		name   string
		reply  func(req []byte) []byte
		detail string
	}{
		{"garbage bytes", func([]byte) []byte { return []byte("\x01\x02garbage\xff\xfe\r\n\r\n") }, "timeout"},
		{"zeros", func([]byte) []byte { return make([]byte, 64) }, "timeout"},
		{"truncated status line", func([]byte) []byte { return []byte("SIP/2.0 20") }, "timeout"},
		{"response without headers", func([]byte) []byte { return []byte("SIP/2.0 200 OK\r\n\r\n") }, "timeout"},
		{"huge reason", func(req []byte) []byte {
			return forgedResponse(req, "200 "+strings.Repeat("A", 1000), "x")
		}, "mismatch"},
		{"wrong Call-ID", func(req []byte) []byte { return forgedResponse(req, "200 OK", "not-your-call-id") }, "Call-ID mismatch"},
		// A mirror: the prober's own OPTIONS comes back, the prober refuses it, and the
		// refusal is mirrored back as the answer. Any failure will do.
		{"a request instead of a response", func(req []byte) []byte { return req }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := rawUDPPeer(t, tt.reply)
			res := probeWithin(t, p, KindMedia, addr, 400*time.Millisecond+generous)
			wantFail(t, res, tt.detail)
			if len(res.Detail) > 200 {
				t.Errorf("Detail is %d bytes; want a short reason", len(res.Detail))
			}
		})
	}
}

func TestSIPForgedCorrectResponseIsHealthy(t *testing.T) {
	// The raw peer's response builder is right, so the wrong-Call-ID failure above is due to
	// the Call-ID alone.
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	addr := rawUDPPeer(t, func(req []byte) []byte {
		callID := strings.TrimSpace(strings.SplitN(headerLines(req, "Call-ID")[0], ":", 2)[1])
		return forgedResponse(req, "200 OK", callID)
	})
	wantOK(t, probeWithin(t, p, KindMedia, addr, 2*time.Second+generous))
}

func TestSIPErrorStatus(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	udp, tcp := sipServer(t, 503, "Service Unavailable")
	res := probeWithin(t, p, KindQueue, udp, 2*time.Second+generous)
	wantFail(t, res, "503")
	if res.Detail != "503 Service Unavailable" {
		t.Errorf("Detail = %q; want %q", res.Detail, "503 Service Unavailable")
	}
	wantFail(t, probeWithin(t, p, KindQueue, "sip:"+tcp+";transport=tcp", 2*time.Second+generous), "503")
}

func TestSIPOKCodes(t *testing.T) {
	t.Parallel()
	ok200 := newTestEndpoint(t, KindMedia).Address()
	accepted202, _ := sipServer(t, 202, "Accepted")
	busy503, _ := sipServer(t, 503, "Service Unavailable")
	tests := []struct {
		name  string
		codes []int
		addr  string
		ok    bool
	}{
		{"nil list, 200", nil, ok200, true},
		{"nil list, 202 is 2xx", nil, accepted202, true},
		{"nil list, 503", nil, busy503, false},
		{"200 only, 200", []int{200}, ok200, true},
		{"200 only, 202", []int{200}, accepted202, false},
		{"503 accepted", []int{200, 503}, busy503, true},
		{"empty list accepts nothing", []int{}, ok200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestProber(t, Config{Timeout: 2 * time.Second, SIPOKCodes: tt.codes})
			res := probeWithin(t, p, KindMedia, tt.addr, 2*time.Second+generous)
			if res.OK != tt.ok {
				t.Fatalf("OK = %v (%q); want %v", res.OK, res.Detail, tt.ok)
			}
		})
	}
	if _, err := NewProber(Config{SIPOKCodes: []int{42}}); err == nil {
		t.Error("NewProber accepted status code 42")
	}
	if _, err := NewProber(Config{Timeout: -time.Second}); err == nil {
		t.Error("NewProber accepted a negative timeout")
	}
}

func TestSIPTCPTransport(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	e := newTestEndpoint(t, KindIVR)
	for _, addr := range []string{
		"sip:" + e.Address() + ";transport=tcp",
		"sip:" + e.Address() + ";transport=udp",
		"sip:" + e.Address(),
	} {
		res := probeWithin(t, p, KindIVR, addr, 2*time.Second+generous)
		wantOK(t, res)
		if res.Detail != "200 OK" {
			t.Errorf("Detail = %q; want 200 OK", res.Detail)
		}
	}
}

func TestSIPConcurrentProbes(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 3 * time.Second})
	live := []string{newTestEndpoint(t, KindMedia).Address(), newTestEndpoint(t, KindMedia).Address()}
	liveTCP := "sip:" + live[0] + ";transport=tcp"
	dead := deadUDPAddress(t)

	const n = 200
	results := make([]Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			switch i % 4 {
			case 0, 1:
				results[i] = p.Probe(t.Context(), KindMedia, live[i%2])
			case 2:
				results[i] = p.Probe(t.Context(), KindMedia, liveTCP)
			default:
				results[i] = p.Probe(t.Context(), KindMedia, dead)
			}
		})
	}
	wg.Wait()
	for i, res := range results {
		if wantOK := i%4 != 3; res.OK != wantOK {
			t.Errorf("probe %d: %+v; want OK=%v", i, res, wantOK)
		}
	}
}

func TestProbeUnknownKindAndBadAddress(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{})
	wantFail(t, p.Probe(t.Context(), "fax", "127.0.0.1:1"), "unknown node kind")
	wantFail(t, p.Probe(t.Context(), KindMedia, "not an address"), "SIP address")
	wantFail(t, p.Probe(t.Context(), KindMeeting, "127.0.0.1:1"), "scheme")
	wantFail(t, p.Probe(t.Context(), KindIM, "127.0.0.1"), "missing port")
}

func TestProberClosed(t *testing.T) {
	t.Parallel()
	p, err := NewProber(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	wantFail(t, p.Probe(t.Context(), KindIM, "127.0.0.1:1"), "prober closed")
}

func TestTCPProbe(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: time.Second})
	e := newTestEndpoint(t, KindIM)
	res := probeWithin(t, p, KindIM, e.Address(), time.Second+generous)
	wantOK(t, res)
	wantFail(t, probeWithin(t, p, KindIM, deadTCPAddress(t), time.Second+generous), "connection refused")
}

func TestWebRTCNothingListening(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	res := probeWithin(t, p, KindMeeting, "http://"+deadTCPAddress(t)+"/", 2*time.Second+generous)
	wantFail(t, res, "connection refused")
}

func TestWebRTCMisbehavingServers(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	tests := []struct {
		name    string
		handler http.HandlerFunc
		detail  string
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, "HTTP 500"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, "not JSON"},
		{"offer echoed back", func(w http.ResponseWriter, r *http.Request) {
			body := new(bytes.Buffer)
			body.ReadFrom(r.Body)
			w.Write(body.Bytes())
		}, "not an SDP answer"},
		{"answer with nonsense SDP", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"type":"answer","sdp":"v=0\r\nnonsense"}`))
		}, "bad answer"},
		{"hangs", func(w http.ResponseWriter, r *http.Request) {
			// Reading the body lets the server notice the prober hanging up.
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		}, "timeout after 2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			wantFail(t, probeWithin(t, p, KindMeeting, srv.URL+"/", 2*time.Second+generous), tt.detail)
		})
	}
}

func TestWebRTCOverHTTPSWithSelfSignedCert(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 5 * time.Second})
	m := newMeetingEndpoint()
	srv := httptest.NewTLSServer(m)
	t.Cleanup(func() {
		srv.Close()
		m.shutdown()
	})
	wantOK(t, probeWithin(t, p, KindMeeting, srv.URL+"/", 5*time.Second+generous))
}

func TestWebRTCEndpointReapsSessions(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 5 * time.Second})
	e := newTestEndpoint(t, KindMeeting)
	for range 3 {
		wantOK(t, probeWithin(t, p, KindMeeting, e.Address(), 5*time.Second+generous))
	}
	// The prober closed its peer connections; the answerer must notice and free the
	// sessions long before their TTL.
	deadline := time.Now().Add(meetingSessionTTL - time.Second)
	for e.sessions() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open after the probes closed", e.sessions())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWebRTCEndpointLimitsSessions(t *testing.T) {
	t.Parallel()
	m := newMeetingEndpoint()
	t.Cleanup(m.shutdown)
	for range maxMeetingSessions {
		m.sem <- struct{}{} // sessions held by slow or absent probes
	}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	wantFail(t, probeWithin(t, p, KindMeeting, srv.URL+"/", 2*time.Second+generous), "HTTP 503")
	for range maxMeetingSessions {
		<-m.sem
	}
	wantOK(t, probeWithin(t, p, KindMeeting, srv.URL+"/", 2*time.Second+generous))

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET status = %d; want 405", resp.StatusCode)
	}
	resp, err = http.Post(srv.URL+"/", "application/json", strings.NewReader(`{"type":"answer","sdp":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST of a non-offer status = %d; want 400", resp.StatusCode)
	}
}

func TestSIPAgainstSipp(t *testing.T) {
	t.Parallel()
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		if _, statErr := os.Stat("/usr/bin/sipp"); statErr != nil {
			t.Fatal("sipp not found: install sip-tester: apt-get install -y sip-tester")
		}
		sipp = "/usr/bin/sipp"
	}
	scenario, err := filepath.Abs(filepath.Join("testdata", "options_uas.xml"))
	if err != nil {
		t.Fatal(err)
	}
	// sipp also binds an RTP echo port pair (default 6000, 6002) and a control port
	// (default 8888); free ones let it run beside other sipp instances.
	port, mediaPort, controlPort := freeUDPPort(t, 0), freeUDPPort(t, 2), freeUDPPort(t, 0)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, sipp, "-sf", scenario, "-i", "127.0.0.1", "-p", port,
		"-mp", mediaPort, "-cp", controlPort, "-m", "1", "-nostdin", "-timeout", "15s")
	cmd.Dir = t.TempDir()
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sipp: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-waited
	})

	// The prober retransmits OPTIONS over UDP (RFC 3261 timer E), so a request sent before
	// sipp has bound its port is answered once it has.
	p := newTestProber(t, Config{Timeout: 8 * time.Second})
	res := probeWithin(t, p, KindMedia, "127.0.0.1:"+port, 8*time.Second+generous)
	if !res.OK {
		t.Fatalf("probe against sipp failed: %+v\nsipp output:\n%s", res, lastLines(out.String(), 30))
	}
	if res.Detail != "200 OK" {
		t.Errorf("Detail = %q; want 200 OK", res.Detail)
	}
	select {
	case err := <-waited:
		waited <- err // for the cleanup
		if err != nil {
			t.Fatalf("sipp exited with %v; want success after one call\n%s", err, lastLines(out.String(), 30))
		}
	case <-ctx.Done():
		t.Fatalf("sipp did not finish its one call")
	}
}

// freeUDPPort returns a loopback UDP port that is free, and with gap > 0 whose port+gap
// is free too. The ports are released before return, so a race with another process is
// possible but unlikely.
func freeUDPPort(t *testing.T, gap int) string {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		ok := true
		if gap > 0 {
			c2, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+gap)))
			if err != nil {
				ok = false
			} else {
				c2.Close()
			}
		}
		c.Close()
		if ok {
			return strconv.Itoa(port)
		}
	}
	t.Fatal("no free UDP port pair")
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestNoGoroutineLeak is not parallel: Go runs it while no parallel test runs, so the
// goroutine count is this test's own.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		p, err := NewProber(Config{Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx := context.Background()
		var eps []*Endpoint
		for _, kind := range []string{KindMedia, KindMeeting, KindIM} {
			e, err := NewEndpoint(ctx, kind, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			eps = append(eps, e)
		}
		garbage := rawUDPPeer(t, func([]byte) []byte { return []byte("garbage") })
		wrongID := rawUDPPeer(t, func(req []byte) []byte { return forgedResponse(req, "200 OK", "x") })
		dead := deadUDPAddress(t)
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				switch i % 6 {
				case 0:
					p.Probe(ctx, KindMedia, eps[0].Address())
				case 1:
					p.Probe(ctx, KindMedia, "sip:"+eps[0].Address()+";transport=tcp")
				case 2:
					p.Probe(ctx, KindMedia, garbage)
				case 3:
					p.Probe(ctx, KindMedia, wrongID)
				case 4:
					p.Probe(ctx, KindMedia, dead)
				case 5:
					p.Probe(ctx, KindIM, eps[2].Address())
				}
			})
		}
		wg.Wait()
		// The probes above may fail as they like (the short timeout keeps
		// the dead peer's wait short); the WebRTC probe must pass, and on
		// a busy machine ICE and DTLS take longer than 300 ms, so it gets
		// a prober with a timeout no machine comes near.
		slow, err := NewProber(Config{Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Close()
		if res := slow.Probe(ctx, KindMeeting, eps[1].Address()); !res.OK {
			t.Errorf("meeting probe: %+v", res)
		}
		for _, e := range eps {
			if err := e.Close(); err != nil {
				t.Error(err)
			}
		}
	}()

	// Closing is asynchronous in places (timers, readers noticing closed sockets): allow
	// it up to a minute (it usually takes milliseconds) and a small slack before calling
	// it a leak.
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := runtime.NumGoroutine()
		if now <= before+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines: %d before, %d after closing everything\n%s", before, now, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMain(m *testing.M) {
	// sipgo logs a few reference-count warnings through its package-wide default logger
	// when a user agent closes; the tests close hundreds, so keep their output quiet.
	sip.SetDefaultLogger(discardLogger)
	os.Exit(m.Run())
}

func TestWebRTCEchoMismatch(t *testing.T) {
	t.Parallel()
	// A peer that answers properly but echoes something else.
	api := newWebRTCAPI()
	var mu sync.Mutex
	var pcs []*webrtc.PeerConnection
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, pc := range pcs {
			_ = pc.GracefulClose()
		}
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var offer webrtc.SessionDescription
		if err := json.NewDecoder(r.Body).Decode(&offer); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		mu.Lock()
		pcs = append(pcs, pc)
		mu.Unlock()
		pc.OnDataChannel(func(dc *webrtc.DataChannel) {
			dc.OnMessage(func(webrtc.DataChannelMessage) { _ = dc.SendText("not your payload") })
		})
		answer, err := newMeetingEndpoint().answer(r.Context(), pc, offer)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_ = json.NewEncoder(w).Encode(answer)
	}))
	t.Cleanup(srv.Close)
	p := newTestProber(t, Config{Timeout: 5 * time.Second})
	wantFail(t, probeWithin(t, p, KindMeeting, srv.URL, 5*time.Second+generous), "echo mismatch")
}

// Every OPTIONS over UDP to an IPv4 address leaves from one socket of the prober, however
// many nodes it probes, and is answered on it: one socket, reader and buffer in all
// instead of one each per node.
func TestSIPProbesOverUDPShareOneSocket(t *testing.T) {
	t.Parallel()
	p := newTestProber(t, Config{Timeout: 2 * time.Second})
	sources := make(chan string, 3)
	for range 3 {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		go func() {
			buf := make([]byte, 65535)
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := bytes.Clone(buf[:n])
			sources <- from.String()
			callID := strings.TrimSpace(strings.SplitN(headerLines(req, "Call-ID")[0], ":", 2)[1])
			_, _ = conn.WriteTo(forgedResponse(req, "200 OK", callID), from)
		}()
		wantOK(t, probeWithin(t, p, KindMedia, conn.LocalAddr().String(), 2*time.Second+generous))
	}
	close(sources)
	var seen []string
	for s := range sources {
		seen = append(seen, s)
	}
	if len(seen) != 3 || seen[0] != seen[1] || seen[1] != seen[2] {
		t.Fatalf("probes of three nodes came from %v, want one socket", seen)
	}
}
