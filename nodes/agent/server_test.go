package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"github.com/callplane/callplane/nodes/agentproto"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests run the agent against an HTTPS server written here to the wire
// contract of the agent API (the real call manager lives elsewhere and has
// its own integration tests). Everything below the HTTP handlers is real:
// TLS, pinning, HTTP, JSON, /bin/sh hooks and the file system.

const (
	testToken      = "cpj_ab12cd34.0123456789abcdefghijklmnopqrstuv"
	testCredential = "cpn_ab12cd34.secretsecretsecretsecretsecret00"
)

type ackRecord struct {
	ID    int64
	State string
	Epoch int64
}

// callManager is an in-process stand-in for the call manager's agent API.
type callManager struct {
	mu         sync.Mutex
	requests   int // every request that reached a handler
	enrolls    []agentproto.EnrollRequest
	heartbeats []agentproto.HeartbeatRequest
	polls      int
	acks       []ackRecord

	hbStatus   int // answer heartbeats with this status when set
	pollStatus int // answer polls with this status when set
	ackStatus  map[int64]int
	ackErrors  map[int64]string // the reason of each failed ack
	// batchAck serves POST /api/v1/assignments/ack; without it the
	// stand-in is a server older than the batch API (404).
	batchAck   bool
	batchCalls int // batch ack requests, answered 404 or not
	batchItems int // acks that came in batch requests
	// pollAcks serves POST /api/v1/assignments (acks on the poll); without
	// it the stand-in is a server older than that (405).
	pollAcks     bool
	pollAckItems int // acks that came on polls
	version      int64
	set          []agentproto.Assignment
	changed      chan struct{} // closed when the set changes
}

func newCallManager() *callManager {
	return &callManager{ackStatus: map[int64]int{}, changed: make(chan struct{})}
}

func (cm *callManager) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enroll", func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.EnrollRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, 400, map[string]any{"error": "malformed JSON"})
			return
		}
		cm.mu.Lock()
		cm.enrolls = append(cm.enrolls, req)
		cm.mu.Unlock()
		if req.Token != testToken {
			writeJSON(w, 401, map[string]any{"error": "invalid or expired join token"})
			return
		}
		writeJSON(w, 200, map[string]any{"node_id": 123, "node_name": "media-1", "kind": "media",
			"credential": testCredential, "heartbeat_interval_ms": 20})
	})
	mux.HandleFunc("POST /api/v1/heartbeat", cm.authed(func(w http.ResponseWriter, r *http.Request) {
		var req agentproto.HeartbeatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, 400, map[string]any{"error": "malformed JSON"})
			return
		}
		cm.mu.Lock()
		cm.heartbeats = append(cm.heartbeats, req)
		status := cm.hbStatus
		cm.mu.Unlock()
		if status != 0 {
			writeJSON(w, status, map[string]any{"error": http.StatusText(status)})
			return
		}
		writeJSON(w, 200, map[string]any{"admin_state": "enabled", "heartbeat_interval_ms": 20})
	}))
	mux.HandleFunc("POST /api/v1/assignments", cm.authed(func(w http.ResponseWriter, r *http.Request) {
		cm.mu.Lock()
		enabled := cm.pollAcks
		cm.mu.Unlock()
		if !enabled {
			writeJSON(w, 405, map[string]any{"error": "method not allowed"})
			return
		}
		var req agentproto.AckBatchRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, 400, map[string]any{"error": "malformed JSON"})
			return
		}
		cm.mu.Lock()
		cm.pollAckItems += len(req.Acks)
		results := cm.ackAllLocked(req.Acks)
		cm.mu.Unlock()
		cm.poll(w, r, results)
	}))
	mux.HandleFunc("GET /api/v1/assignments", cm.authed(func(w http.ResponseWriter, r *http.Request) { cm.poll(w, r, nil) }))
	mux.HandleFunc("POST /api/v1/assignments/{id}/ack", cm.authed(func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		var req agentproto.AckRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, 400, map[string]any{"error": "malformed JSON"})
			return
		}
		cm.mu.Lock()
		defer cm.mu.Unlock()
		cm.noteError(id, req.Error)
		status, msg := cm.ackLocked(id, req.State, req.Epoch)
		if status != 200 {
			writeJSON(w, status, map[string]any{"error": msg})
			return
		}
		writeJSON(w, 200, map[string]any{"ok": true})
	}))
	mux.HandleFunc("POST /api/v1/assignments/ack", cm.authed(func(w http.ResponseWriter, r *http.Request) {
		cm.mu.Lock()
		cm.batchCalls++
		enabled := cm.batchAck
		cm.mu.Unlock()
		if !enabled {
			http.NotFound(w, r)
			return
		}
		var req agentproto.AckBatchRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, 400, map[string]any{"error": "malformed JSON"})
			return
		}
		cm.mu.Lock()
		defer cm.mu.Unlock()
		cm.batchItems += len(req.Acks)
		writeJSON(w, 200, agentproto.AckBatchResponse{Results: cm.ackAllLocked(req.Acks)})
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cm.mu.Lock()
		cm.requests++
		cm.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
}

// poll answers the long-poll, with the results of the acks it carried.
func (cm *callManager) poll(w http.ResponseWriter, r *http.Request, acked []agentproto.AckResult) {
	since, err1 := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	wait, err2 := time.ParseDuration(r.URL.Query().Get("wait"))
	if err1 != nil || err2 != nil {
		writeJSON(w, 400, map[string]any{"error": "bad since or wait"})
		return
	}
	cm.mu.Lock()
	cm.polls++
	status := cm.pollStatus
	cm.mu.Unlock()
	if status != 0 {
		writeJSON(w, status, map[string]any{"error": http.StatusText(status)})
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		cm.mu.Lock()
		v, set, changed := cm.version, append([]agentproto.Assignment{}, cm.set...), cm.changed
		cm.mu.Unlock()
		if v > since {
			writeJSON(w, 200, agentproto.DesiredSet{Version: v, Assignments: set, Acks: acked})
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			writeJSON(w, 200, agentproto.DesiredSet{Version: v, Assignments: set, Acks: acked})
			return
		case <-r.Context().Done():
			return
		}
	}
}

// ackAllLocked records acks sent together and returns their results (mu
// held).
func (cm *callManager) ackAllLocked(acks []agentproto.Ack) []agentproto.AckResult {
	results := make([]agentproto.AckResult, len(acks))
	for i, a := range acks {
		cm.noteError(a.ID, a.Error)
		results[i] = agentproto.AckResult{ID: a.ID, OK: true}
		if status, msg := cm.ackLocked(a.ID, a.State, a.Epoch); status != 200 {
			results[i] = agentproto.AckResult{ID: a.ID, Error: msg, Status: status}
		}
	}
	return results
}

// noteError records why an ack reported a failed start (mu held).
func (cm *callManager) noteError(id int64, reason string) {
	if reason == "" {
		return
	}
	if cm.ackErrors == nil {
		cm.ackErrors = map[int64]string{}
	}
	cm.ackErrors[id] = reason
}

// ackError returns the reason the agent gave for a failed start.
func (cm *callManager) ackError(id int64) string {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return cm.ackErrors[id]
}

// ackLocked records one ack and says how the call manager answers it.
func (cm *callManager) ackLocked(id int64, state string, epoch int64) (int, string) {
	cm.acks = append(cm.acks, ackRecord{ID: id, State: state, Epoch: epoch})
	if st := cm.ackStatus[id]; st != 0 {
		return st, "stale epoch"
	}
	for i := range cm.set {
		if cm.set[i].ID == id {
			if cm.set[i].Epoch != epoch {
				return 409, "stale epoch"
			}
			if state == agentproto.StateActive {
				cm.set[i].State = agentproto.StateActive
			}
			return 200, ""
		}
	}
	return 404, "not found"
}

func (cm *callManager) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testCredential {
			writeJSON(w, 401, map[string]any{"error": "unauthorized"})
			return
		}
		h(w, r)
	}
}

// setDesired replaces the desired set and bumps its version, waking polls.
// Calling it with the same set is a duplicate delivery.
func (cm *callManager) setDesired(set ...agentproto.Assignment) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	cm.set = set
	cm.version++
	close(cm.changed)
	cm.changed = make(chan struct{})
}

func (cm *callManager) snapshot() (requests, polls int, acks []ackRecord, hbs []agentproto.HeartbeatRequest) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return cm.requests, cm.polls, append([]ackRecord{}, cm.acks...), append([]agentproto.HeartbeatRequest{}, cm.heartbeats...)
}

func (cm *callManager) set403(hb, poll int) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	cm.hbStatus, cm.pollStatus = hb, poll
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// startTLS serves h over HTTPS with cert (nil: httptest's own) on ln (nil:
// a fresh loopback port) and returns the server and its pin.
func startTLS(t *testing.T, h http.Handler, cert *tls.Certificate, ln net.Listener) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	if cert != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	// Refused handshakes are the point of some tests; keep them out of the output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, agentproto.PinOf(srv.Certificate())
}

// newCert makes a self-signed certificate with a fresh key, as the call
// manager does on first start.
func newCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "callmanager"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// eventually polls cond until it holds or five seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
