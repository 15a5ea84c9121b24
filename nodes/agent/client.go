package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
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

// apiClient speaks the agent API of the call managers over pinned TLS.
//
// It knows every call manager of the cluster (the --server URLs) and talks
// to one at a time, the current one, so that no virtual IP or load
// balancer is needed in front of them. A request the current server does
// not answer in time (no connection, a timeout, a reset, or 502/503/504)
// moves the client to the next server and is retried there at once; each
// server is tried at most once per request. A request in flight on a
// server another request has just given up on is abandoned and retried on
// the new current server, so a paused instance holds neither the
// heartbeat nor the long poll. The client stays on the server that answers
// and does not go back to the first one by itself.
type apiClient struct {
	servers    []string
	hc         *http.Client
	credMu     sync.Mutex
	credential string // empty for enrol
	userAgent  string
	log        *slog.Logger

	curMu    sync.Mutex
	cur      int           // index of the current server
	switched chan struct{} // closed when cur changes
	// features is what each server said it takes in its last answer
	// (agentproto.FeaturesHeader), by base URL.
	features map[string]string
}

func newAPIClient(servers []string, pin, credential, version string, log *slog.Logger) (*apiClient, error) {
	servers, err := ParseServers(servers)
	if err != nil {
		return nil, err
	}
	tlsConf, err := agentproto.PinnedTLSConfig(pin)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
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
		servers: servers,
		hc: &http.Client{
			Transport: tr,
			// A redirect could lead the token or credential off the pinned
			// server (to plain http, say); the agent API never redirects.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		credential: credential,
		userAgent:  "callplane-nodeagent/" + version,
		log:        log,
		switched:   make(chan struct{}),
		features:   map[string]string{},
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

// current returns the current server, its index, and a channel closed when
// the client moves away from it.
func (c *apiClient) current() (int, string, <-chan struct{}) {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	return c.cur, c.servers[c.cur], c.switched
}

// noteFeatures records what base said it takes.
func (c *apiClient) noteFeatures(base, header string) {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	c.features[base] = header
}

// has reports whether base said it takes feature in its last answer, and
// whether it has answered (since it last failed to).
func (c *apiClient) has(base, feature string) (has, known bool) {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	h, known := c.features[base]
	return agentproto.HasFeature(h, feature), known
}

// failover moves to the server after from, unless another request already
// moved the client on.
func (c *apiClient) failover(from int, why error) {
	if len(c.servers) < 2 {
		return
	}
	c.curMu.Lock()
	defer c.curMu.Unlock()
	if c.cur != from {
		return
	}
	c.cur = (from + 1) % len(c.servers)
	close(c.switched)
	c.switched = make(chan struct{})
	c.log.Warn("call manager not answering; moving to the next one",
		"from", c.servers[from], "to", c.servers[c.cur], "reason", why)
}

// errSwitched ends a request that another request gave up on the same
// server for; it is retried on the new current server.
var errSwitched = errors.New("moved to another call manager")

// do sends one request and decodes a 200 answer into out, moving through
// the servers as the type comment says. perTry bounds each attempt. Errors
// are a *statusError for an answer other than 200, a *agentproto.PinMismatchError for
// the wrong server, the context's error, or "cannot reach server".
func (c *apiClient) do(ctx context.Context, perTry time.Duration, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	var err error
	for tries := 0; tries < len(c.servers); {
		idx, base, switched := c.current()
		err = c.once(ctx, perTry, switched, base, method, path, body, nil, out)
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case errors.Is(err, errSwitched):
			continue // not this server's fault: retry on the new one
		case !failoverWorthy(err):
			return err
		}
		c.failover(idx, err)
		tries++
	}
	return err
}

// failoverWorthy reports an error after which another call manager may
// well answer: none came, or this one cannot serve now.
func failoverWorthy(err error) bool {
	switch statusOf(err) {
	case 0:
		return true // no answer, or a server with the wrong key
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// once is one attempt against base, ended early when the client moves away
// from base (errSwitched).
// A POST stream sends stream (its acks, as they fall due) instead of a
// JSON body.
func (c *apiClient) once(ctx context.Context, perTry time.Duration, switched <-chan struct{}, base, method, path string, body []byte, stream io.Reader, out any) error {
	tctx, cancel := context.WithTimeoutCause(ctx, perTry, errTryTimeout)
	defer cancel()
	tctx, cancelSwitch := context.WithCancelCause(tctx)
	defer cancelSwitch(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-switched:
			cancelSwitch(errSwitched)
		case <-stop:
		}
	}()
	rd := stream
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if pr, ok := stream.(*io.PipeReader); ok {
		// Go's transport waits for a request body's copy to end before it
		// gives up on the request, and this body ends only when the agent
		// ends it: so it ends with the try (timed out, moved to another
		// server, shut down, or answered).
		context.AfterFunc(tctx, func() { _ = pr.CloseWithError(context.Cause(tctx)) })
	}
	req, err := http.NewRequestWithContext(tctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	switch {
	case body != nil:
		req.Header.Set("Content-Type", "application/json")
	case stream != nil:
		req.Header.Set("Content-Type", agentproto.StreamContentType)
		// Sent as it comes: without this the client waits up to 200 ms
		// for the body's first byte before it sends the request.
		req.ContentLength = -1
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if cred := c.getCredential(); cred != "" {
		agentproto.SetBearer(req.Header, cred)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if stream != nil {
			// Ask again before the next stream with a body.
			c.curMu.Lock()
			delete(c.features, base)
			c.curMu.Unlock()
		}
		return c.transportError(ctx, tctx, base, err)
	}
	defer resp.Body.Close()
	c.noteFeatures(base, resp.Header.Get(agentproto.FeaturesHeader))
	if h, ok := out.(answerReader); ok && resp.StatusCode == http.StatusOK {
		if err := h(resp); err != nil {
			return c.transportError(ctx, tctx, base, err)
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return c.transportError(ctx, tctx, base, err)
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

// maxAnswer bounds one answer, or one line of a stream: a desired set of
// many thousand assignments fits in 16 MiB; more is a broken or hostile
// server.
const maxAnswer = 16 << 20

// answerReader, passed to once as out, reads a 200 answer itself (a
// stream) instead of having it decoded whole.
type answerReader func(*http.Response) error

// errTryTimeout is the cause of an attempt that took longer than its bound.
var errTryTimeout = errors.New("no answer in time")

func (c *apiClient) transportError(ctx, tctx context.Context, base string, err error) error {
	var pe *agentproto.PinMismatchError
	if errors.As(err, &pe) {
		return pe
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cause := context.Cause(tctx); errors.Is(cause, errSwitched) {
		return errSwitched
	} else if cause != nil {
		err = cause
	} else {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is said once, below
		}
	}
	return fmt.Errorf("cannot reach server %s: %w", base, err)
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

// enrollTimeout bounds one enrol attempt.
const enrollTimeout = 30 * time.Second

func (c *apiClient) enroll(ctx context.Context, req agentproto.EnrollRequest) (*agentproto.EnrollResponse, error) {
	var resp agentproto.EnrollResponse
	if err := c.do(ctx, enrollTimeout, http.MethodPost, agentproto.Prefix+agentproto.EnrollPath, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// heartbeat reports to the current server. A server that does not answer
// within timeout (one heartbeat interval, well under the stale time after
// which the checker stops trusting the node's heartbeats) is left for the
// next one, so one paused or dead instance never makes a node look lost.
func (c *apiClient) heartbeat(ctx context.Context, timeout time.Duration, req agentproto.HeartbeatRequest) (*agentproto.HeartbeatResponse, error) {
	var resp agentproto.HeartbeatResponse
	if err := c.do(ctx, timeout, http.MethodPost, agentproto.Prefix+agentproto.HeartbeatPath, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// assignments long-polls the desired set. The request may take up to wait
// plus a margin for the server and the network. Acks, when given, ride the
// poll (a POST); their results come back in the answer's Acks. A server
// older than that answers 405.
func (c *apiClient) assignments(ctx context.Context, since int64, wait time.Duration, delta bool, acks []agentproto.Ack) (*agentproto.DesiredSet, error) {
	var resp agentproto.DesiredSet
	method, body := http.MethodGet, any(nil)
	if len(acks) > 0 {
		method, body = http.MethodPost, agentproto.AckBatchRequest{Acks: acks}
	}
	if err := c.do(ctx, wait+15*time.Second, method, agentproto.Prefix+agentproto.PollPath(since, wait, delta), body, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// stream takes the desired set as a stream (agentproto.QueryStream):
// onSet gets each line as it arrives, with streamed true, until the
// server ends the stream (nil) or it fails. A server older than streams
// answers one set, as to a long-poll: onSet gets it with streamed false.
// since is asked again for each server tried. Once a line has arrived, a
// stream cut short is not retried here: the caller opens the next one
// from the version it has.
//
// With acks, a server that said it takes them (agentproto.FeatureAckStream)
// gets a POST whose body is acks.body(), opened anew for each server
// tried: the agent's acks as they fall due. Their results come to onSet
// as lines of their own (DesiredSet.AckLine). Other servers get a GET.
func (c *apiClient) stream(ctx context.Context, since func() int64, wait time.Duration, acks *ackStream, onSet func(ds *agentproto.DesiredSet, streamed bool)) error {
	got, post := false, false
	read := answerReader(func(resp *http.Response) error {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != agentproto.StreamContentType {
			var ds agentproto.DesiredSet
			data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
			if err != nil {
				return err
			}
			if err := json.Unmarshal(data, &ds); err != nil {
				return fmt.Errorf("decode answer: %w", err)
			}
			got = true
			onSet(&ds, false)
			return nil
		}
		lr := &io.LimitedReader{R: resp.Body}
		dec := json.NewDecoder(lr)
		for {
			lr.N = maxAnswer // per line
			var ds agentproto.DesiredSet
			if err := dec.Decode(&ds); err != nil {
				if errors.Is(err, io.EOF) && lr.N > 0 {
					return nil // the server ended the stream
				}
				return fmt.Errorf("read stream: %w", err)
			}
			got = true
			if post && ds.End {
				acks.end()
			}
			onSet(&ds, true)
		}
	})
	var err error
	for tries := 0; tries < len(c.servers); {
		idx, base, switched := c.current()
		method, body, w := http.MethodGet, io.Reader(nil), wait
		has, known := c.has(base, agentproto.FeatureAckStream)
		switch post = acks != nil && has; {
		case post:
			beats, _ := c.has(base, agentproto.FeatureBeatStream)
			method, body = http.MethodPost, acks.body(beats)
		case acks != nil && !known:
			// A GET while this server has not said whether it takes acks
			// on the stream: a short one, which answers that too.
			w = min(wait, featureProbeWait)
		}
		path := agentproto.Prefix + agentproto.StreamPath(since(), w)
		err = c.once(ctx, w+15*time.Second, switched, base, method, path, nil, body, read)
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case got && errors.Is(err, errSwitched):
			return nil // open the next stream on the new server
		case got:
			return err
		case errors.Is(err, errSwitched):
			continue
		case !failoverWorthy(err):
			return err
		}
		c.failover(idx, err)
		tries++
	}
	return err
}

// featureProbeWait is the wait of a stream to a server whose features are
// not known yet.
const featureProbeWait = time.Second

// ackTimeout bounds one ack attempt.
const ackTimeout = 10 * time.Second

func (c *apiClient) ack(ctx context.Context, id int64, state string, epoch int64, reason string) error {
	return c.do(ctx, ackTimeout, http.MethodPost, agentproto.Prefix+agentproto.AckPath(id), agentproto.AckRequest{State: state, Epoch: epoch, Error: reason}, nil)
}

// ackBatch sends many acks in one request (POST AckBatchPath).
// A server older than the batch API answers 404.
func (c *apiClient) ackBatch(ctx context.Context, acks []agentproto.Ack) ([]agentproto.AckResult, error) {
	var resp agentproto.AckBatchResponse
	if err := c.do(ctx, 30*time.Second, http.MethodPost, agentproto.Prefix+agentproto.AckBatchPath, agentproto.AckBatchRequest{Acks: acks}, &resp); err != nil {
		return nil, err
	}
	return resp.Results, nil
}
