package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"
)

// maxSDPBytes bounds an offer or answer read from the network; a data-channel-only SDP
// with host candidates is a few kilobytes.
const maxSDPBytes = 64 << 10

// newWebRTCAPI builds the pion API both sides of the meeting probe use: host candidates
// only (no STUN or TURN: nodes are reached directly), loopback candidates included so a
// node on the same host (and tests) can be probed, mDNS off so candidates carry real
// addresses, UDP over IPv4 only, and pion's own logging silenced (outcomes are reported
// in Result).
func newWebRTCAPI() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.LoggerFactory = &logging.DefaultLoggerFactory{
		Writer:          io.Discard,
		DefaultLogLevel: logging.LogLevelDisabled,
		ScopeLevels:     map[string]logging.LogLevel{},
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

// probeWebRTC opens a data channel to the meeting node's probe endpoint (offer POSTed as
// JSON, answer read back) and requires a random payload to be echoed back unchanged.
func (p *Prober) probeWebRTC(ctx context.Context, address string) Result {
	u, err := ParseWebRTCAddress(address)
	if err != nil {
		return Result{Detail: shorten(err.Error())}
	}
	pc, err := p.rtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return Result{Detail: shorten("create peer connection: " + err.Error())}
	}
	// GracefulClose also waits for the connection's goroutines, so nothing outlives the
	// probe. It is called outside any pion callback, where it is safe.
	defer func() { _ = pc.GracefulClose() }()

	failed := make(chan struct{})
	var failOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			failOnce.Do(func() { close(failed) })
		}
	})

	dc, err := pc.CreateDataChannel("callplane-probe", nil)
	if err != nil {
		return Result{Detail: shorten("create data channel: " + err.Error())}
	}
	opened := make(chan struct{})
	dc.OnOpen(func() { close(opened) })
	echoed := make(chan []byte, 1)
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		select {
		case echoed <- bytes.Clone(msg.Data):
		default: // Only the first message is judged; more is a misbehaving peer.
		}
	})

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return Result{Detail: shorten("create offer: " + err.Error())}
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return Result{Detail: shorten("set local description: " + err.Error())}
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return failure(ctx, ctx.Err())
	}

	answer, res, ok := p.exchangeSDP(ctx, u.String(), *pc.LocalDescription())
	if !ok {
		return res
	}
	if err := pc.SetRemoteDescription(answer); err != nil {
		return Result{Detail: shorten("bad answer: " + err.Error())}
	}

	select {
	case <-opened:
	case <-failed:
		return Result{Detail: "ICE/DTLS connection failed"}
	case <-ctx.Done():
		return failure(ctx, ctx.Err())
	}

	var nonce [16]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never fails.
	payload := "callplane-probe-" + hex.EncodeToString(nonce[:])
	if err := dc.SendText(payload); err != nil {
		return Result{Detail: shorten("send on data channel: " + err.Error())}
	}
	select {
	case got := <-echoed:
		if string(got) != payload {
			return Result{Detail: "echo mismatch"}
		}
		return Result{OK: true, Detail: "echo OK"}
	case <-failed:
		return Result{Detail: "connection closed before echo"}
	case <-ctx.Done():
		return failure(ctx, ctx.Err())
	}
}

// exchangeSDP POSTs offer to url and returns the answer. When ok is false, res says why.
func (p *Prober) exchangeSDP(ctx context.Context, url string, offer webrtc.SessionDescription) (answer webrtc.SessionDescription, res Result, ok bool) {
	body, err := json.Marshal(offer)
	if err != nil {
		return answer, Result{Detail: shorten("encode offer: " + err.Error())}, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return answer, Result{Detail: shorten(err.Error())}, false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		return answer, failure(ctx, err), false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxSDPBytes))
		return answer, Result{Detail: "HTTP " + resp.Status}, false
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSDPBytes+1))
	if err != nil {
		return answer, failure(ctx, err), false
	}
	if len(data) > maxSDPBytes {
		return answer, Result{Detail: "answer too large"}, false
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return answer, Result{Detail: "answer is not JSON SDP"}, false
	}
	if answer.Type != webrtc.SDPTypeAnswer || answer.SDP == "" {
		return answer, Result{Detail: "answer is not an SDP answer"}, false
	}
	return answer, Result{}, true
}

// meetingEndpoint answers WebRTC offers with a peer connection that echoes every
// data-channel message. Sessions are bounded in number and in time.
type meetingEndpoint struct {
	api        *webrtc.API
	sem        chan struct{} // one token per live session
	sessionTTL time.Duration

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // session reapers
}

// Session limits of the meeting probe endpoint: a probe needs one session for well under
// a second, so a handful covers several health checkers probing at once.
const (
	maxMeetingSessions = 16
	meetingSessionTTL  = 10 * time.Second
	answerTimeout      = 5 * time.Second
)

func newMeetingEndpoint() *meetingEndpoint {
	return &meetingEndpoint{
		api:        newWebRTCAPI(),
		sem:        make(chan struct{}, maxMeetingSessions),
		sessionTTL: meetingSessionTTL,
		closing:    make(chan struct{}),
	}
}

// ServeHTTP takes a JSON offer and answers with the SDP of an echoing peer connection.
func (m *meetingEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a JSON WebRTC offer", http.StatusMethodNotAllowed)
		return
	}
	var offer webrtc.SessionDescription
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSDPBytes))
	if err := dec.Decode(&offer); err != nil || offer.Type != webrtc.SDPTypeOffer || offer.SDP == "" {
		http.Error(w, `body must be {"type":"offer","sdp":"..."}`, http.StatusBadRequest)
		return
	}

	select {
	case m.sem <- struct{}{}:
	default:
		http.Error(w, "too many probe sessions", http.StatusServiceUnavailable)
		return
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.sem
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()

	pc, err := m.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		<-m.sem
		m.wg.Done()
		http.Error(w, "cannot create peer connection", http.StatusInternalServerError)
		return
	}

	// The reaper owns the session from here: it closes the peer connection when the probe
	// goes away, when the session outlives its TTL, or when the endpoint closes.
	ended := make(chan struct{})
	var endOnce sync.Once
	end := func() { endOnce.Do(func() { close(ended) }) }
	go func() {
		defer m.wg.Done()
		defer func() { <-m.sem }()
		ttl := time.NewTimer(m.sessionTTL)
		defer ttl.Stop()
		select {
		case <-ended:
		case <-ttl.C:
		case <-m.closing:
		}
		_ = pc.GracefulClose()
	}()

	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed, webrtc.PeerConnectionStateDisconnected:
			end()
		}
	})
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnClose(end)
		dc.OnMessage(func(msg webrtc.DataChannelMessage) {
			if msg.IsString {
				_ = dc.SendText(string(msg.Data))
			} else {
				_ = dc.Send(msg.Data)
			}
		})
	})

	answer, err := m.answer(r.Context(), pc, offer)
	if err != nil {
		end()
		http.Error(w, shorten(err.Error()), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(answer)
}

// answer applies offer and returns the complete answer, candidates included.
func (m *meetingEndpoint) answer(ctx context.Context, pc *webrtc.PeerConnection, offer webrtc.SessionDescription) (webrtc.SessionDescription, error) {
	ctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	if err := pc.SetRemoteDescription(offer); err != nil {
		return webrtc.SessionDescription{}, fmt.Errorf("bad offer: %w", err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return webrtc.SessionDescription{}, fmt.Errorf("create answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return webrtc.SessionDescription{}, fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return webrtc.SessionDescription{}, errors.New("ICE gathering did not complete")
	}
	return *pc.LocalDescription(), nil
}

// sessions reports the number of live sessions.
func (m *meetingEndpoint) sessions() int { return len(m.sem) }

// shutdown closes every session and waits for their reapers. The HTTP server must be
// shut down first so no handler starts a session afterwards.
func (m *meetingEndpoint) shutdown() {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.closing)
	}
	m.mu.Unlock()
	m.wg.Wait()
}
