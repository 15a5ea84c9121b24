package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusError is a non-200 answer of the agent API.
type statusError struct {
	Status  int
	Message string // the server's {"error": "..."}, or the status text
}

func (e *statusError) Error() string {
	return fmt.Sprintf("server answered %d: %s", e.Status, e.Message)
}

// statusOf returns the HTTP status of an agent API error, or 0 when the
// request did not get an answer.
func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// apiClient speaks the agent API of one call manager over pinned TLS.
type apiClient struct {
	base       string
	hc         *http.Client
	credMu     sync.Mutex
	credential string // empty for enrol
	userAgent  string
}

func newAPIClient(server, pin, credential, version string) (*apiClient, error) {
	base, err := parseServerURL(server)
	if err != nil {
		return nil, err
	}
	tlsConf, err := pinnedTLSConfig(pin)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 10 * time.Second,
		// HTTP/1.1 with keep-alive: the agent holds a long-poll and sends a
		// heartbeat each second on two idle-cheap connections, and Go's
		// HTTP/1.1 server path costs the call manager about a third less CPU
		// per request than HTTP/2 framing (see BENCHMARKS.md).
		ForceAttemptHTTP2:   false,
		MaxIdleConns:        4,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &apiClient{
		base: base,
		hc: &http.Client{
			Transport: tr,
			// A redirect could lead the token or credential off the pinned
			// server (to plain http, say); the agent API never redirects.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		credential: credential,
		userAgent:  "callplane-nodeagent/" + version,
	}, nil
}

func (c *apiClient) close() { c.hc.CloseIdleConnections() }

func (c *apiClient) getCredential() string {
	c.credMu.Lock()
	defer c.credMu.Unlock()
	return c.credential
}

func (c *apiClient) setCredential(cred string) {
	c.credMu.Lock()
	defer c.credMu.Unlock()
	c.credential = cred
}

// do sends one request and decodes a 200 answer into out. Errors are a
// *statusError for an answer other than 200, a *PinMismatchError for the
// wrong server, the context's error, or "cannot reach server".
func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if cred := c.getCredential(); cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	// A desired set of many thousand assignments fits in 16 MiB; more is a
	// broken or hostile server.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return c.transportError(ctx, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := http.StatusText(resp.StatusCode)
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &statusError{Status: resp.StatusCode, Message: oneLine(msg, 200)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}

func (c *apiClient) transportError(ctx context.Context, err error) error {
	var pe *PinMismatchError
	if errors.As(err, &pe) {
		return pe
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is said once, below
	}
	return fmt.Errorf("cannot reach server %s: %w", c.base, err)
}

// oneLine shortens s to one line of at most n bytes, so a server's error
// text cannot flood a log line or the command's one-line reason.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// Wire types of the agent API (DESIGN.md, "Agent API").

type enrollRequest struct {
	Token   string `json:"token"`
	Address string `json:"address"`
	Version string `json:"version"`
}

type enrollResponse struct {
	NodeID              int64  `json:"node_id"`
	NodeName            string `json:"node_name"`
	Kind                string `json:"kind"`
	Credential          string `json:"credential"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
}

type runningRef struct {
	ID    int64 `json:"id"`
	Epoch int64 `json:"epoch"`
}

type heartbeatRequest struct {
	Load    int64  `json:"load"`
	Version string `json:"version"`
	// Running is the set of assignments running here; nil (omitted) when
	// this heartbeat does not report it, an empty list when nothing runs.
	Running *[]runningRef `json:"running,omitempty"`
}

type heartbeatResponse struct {
	AdminState          string `json:"admin_state"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	// Credential is set when an administrator rotated the node's
	// credential: the agent stores it and uses it from then on.
	Credential string `json:"credential,omitempty"`
}

// assignment is one unit of work the call manager wants this node to run.
type assignment struct {
	ID    int64  `json:"id"`
	Ref   string `json:"ref"`
	Kind  string `json:"kind"`
	Cost  int64  `json:"cost"`
	Epoch int64  `json:"epoch"`
	State string `json:"state"`
}

type assignmentsResponse struct {
	Version     int64        `json:"version"`
	Assignments []assignment `json:"assignments"`
}

type ackRequest struct {
	State string `json:"state"`
	Epoch int64  `json:"epoch"`
	Error string `json:"error,omitempty"` // why a start failed
}

func (c *apiClient) enroll(ctx context.Context, req enrollRequest) (*enrollResponse, error) {
	var resp enrollResponse
	if err := c.do(ctx, http.MethodPost, "/api/v1/enroll", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *apiClient) heartbeat(ctx context.Context, req heartbeatRequest) (*heartbeatResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var resp heartbeatResponse
	if err := c.do(ctx, http.MethodPost, "/api/v1/heartbeat", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// assignments long-polls the desired set. The request may take up to wait
// plus a margin for the server and the network.
func (c *apiClient) assignments(ctx context.Context, since int64, wait time.Duration) (*assignmentsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
	defer cancel()
	q := url.Values{"since": {strconv.FormatInt(since, 10)}, "wait": {wait.String()}}
	var resp assignmentsResponse
	if err := c.do(ctx, http.MethodGet, "/api/v1/assignments?"+q.Encode(), nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *apiClient) ack(ctx context.Context, id int64, state string, epoch int64, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	path := "/api/v1/assignments/" + strconv.FormatInt(id, 10) + "/ack"
	return c.do(ctx, http.MethodPost, path, ackRequest{State: state, Epoch: epoch, Error: reason}, nil)
}

// maxAckBatch bounds the acks of one batch request (the server's limit).
const maxAckBatch = 1000

type ackBatchItem struct {
	ID    int64  `json:"id"`
	Epoch int64  `json:"epoch"`
	State string `json:"state"`
	Error string `json:"error,omitempty"` // why a start failed
}

type ackBatchRequest struct {
	Acks []ackBatchItem `json:"acks"`
}

// ackBatchResult is the server's answer for one ack of a batch: ok, or the
// error and status the single ack would have answered.
type ackBatchResult struct {
	ID     int64  `json:"id"`
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	Status int    `json:"status"`
}

type ackBatchResponse struct {
	Results []ackBatchResult `json:"results"`
}

// ackBatch sends many acks in one request (POST /api/v1/assignments/ack).
// A server older than the batch API answers 404.
func (c *apiClient) ackBatch(ctx context.Context, acks []ackBatchItem) ([]ackBatchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var resp ackBatchResponse
	if err := c.do(ctx, http.MethodPost, "/api/v1/assignments/ack", ackBatchRequest{Acks: acks}, &resp); err != nil {
		return nil, err
	}
	return resp.Results, nil
}
