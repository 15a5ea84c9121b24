package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/webrtc/v4"
)

// DefaultTimeout bounds a probe when Config.Timeout is zero.
const DefaultTimeout = 800 * time.Millisecond

// Config tunes a Prober.
type Config struct {
	// Timeout bounds each probe under its own deadline (DefaultTimeout if zero). A probe
	// never takes longer, whatever the peer does.
	Timeout time.Duration
	// SIPOKCodes lists the SIP status codes that count as healthy; nil means any 2xx.
	SIPOKCodes []int
	// Logger receives the SIP and WebRTC stacks' internal logs; nil discards them. Probe
	// outcomes are reported in Result, not logged.
	Logger *slog.Logger
}

// Result is the outcome of one probe.
type Result struct {
	// OK is true when the node answered as a healthy node does.
	OK bool
	// Latency is how long the probe took, whatever its outcome.
	Latency time.Duration
	// Detail is a short human reason, e.g. "200 OK", "timeout after 800ms",
	// "503 Service Unavailable", "connection refused" or "echo mismatch".
	Detail string
}

// Prober probes node service addresses. It holds the state that is expensive to create
// and safe to share across probes — one SIP user agent and client, one WebRTC API, one
// HTTP client — so that one Prober serves every node of the cluster, with many probes in
// flight at once. Its methods are safe for concurrent use.
type Prober struct {
	timeout time.Duration
	sipOK   map[int]bool // nil: any 2xx

	ua        *sipgo.UserAgent
	sipClient *sipgo.Client
	// udp4 is the one socket every OPTIONS over UDP to an IPv4 address
	// leaves from and is answered on, sent by udp4Client (see
	// newUDP4Socket). Others go through sipClient.
	udp4       net.PacketConn
	udp4Client *sipgo.Client
	rtc        *webrtc.API
	http       *http.Client
	transport  *http.Transport
	dialer     net.Dialer

	closed atomic.Bool
}

// NewProber creates a Prober and its shared SIP user agent, WebRTC API and HTTP client.
// Close releases them.
func NewProber(cfg Config) (*Prober, error) {
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("new prober: negative timeout %s", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	var okCodes map[int]bool
	if cfg.SIPOKCodes != nil {
		okCodes = make(map[int]bool, len(cfg.SIPOKCodes))
		for _, c := range cfg.SIPOKCodes {
			if c < 100 || c > 699 {
				return nil, fmt.Errorf("new prober: SIP status code %d out of range 100-699", c)
			}
			okCodes[c] = true
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = discardLogger
	}

	ua, err := newUA("callplane-probe", logger)
	if err != nil {
		return nil, fmt.Errorf("new prober: sip user agent: %w", err)
	}
	// The client only sends requests, but a peer may still send one to its socket; answer
	// and end such a transaction instead of leaving it open until its timers expire.
	ua.TransactionLayer().OnRequest(func(req *sip.Request, tx *sip.ServerTx) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusForbidden, "Forbidden", nil))
		tx.TerminateGracefully()
	})
	// rport (RFC 3581) asks the node to answer to the address the request came from, so
	// the probe works through NAT and whatever sent-by the Via carries.
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(logger), sipgo.WithClientNAT())
	if err != nil {
		_ = ua.Close()
		return nil, fmt.Errorf("new prober: sip client: %w", err)
	}
	udp4, udp4Client, err := newUDP4Socket(ua, logger)
	if err != nil {
		_ = ua.Close()
		return nil, fmt.Errorf("new prober: %w", err)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	// Probes go straight to the node: an HTTP(S)_PROXY meant for the outside world must
	// not sit between the health checker and its nodes.
	transport.Proxy = nil
	// The meeting probe endpoint of a node agent serves a self-signed certificate, and this
	// is a liveness probe, not a channel that carries secrets: skip verification.
	transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // liveness probe of a self-signed endpoint
	transport.MaxIdleConnsPerHost = 2

	return &Prober{
		timeout:    timeout,
		sipOK:      okCodes,
		ua:         ua,
		sipClient:  client,
		udp4:       udp4,
		udp4Client: udp4Client,
		rtc:        newWebRTCAPI(),
		http:       &http.Client{Transport: transport},
		transport:  transport,
	}, nil
}

// Probe checks the node service at address for a node of kind (media, ivr, queue: SIP
// OPTIONS; meeting: WebRTC data-channel echo; im: TCP connect) and reports the outcome.
// It returns within the configured timeout, or sooner if ctx ends.
func (p *Prober) Probe(ctx context.Context, kind, address string) Result {
	start := time.Now()
	if p.closed.Load() {
		return Result{Detail: "prober closed"}
	}
	budget := p.timeout
	if dl, ok := ctx.Deadline(); ok {
		budget = max(min(budget, time.Until(dl)), 0)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	var res Result
	switch kind {
	case KindMedia, KindIVR, KindQueue:
		res = p.probeSIP(ctx, address)
	case KindMeeting:
		res = p.probeWebRTC(ctx, address)
	case KindIM:
		res = p.probeTCP(ctx, address)
	default:
		res = Result{Detail: fmt.Sprintf("unknown node kind %q", kind)}
	}
	res.Latency = time.Since(start)
	observe(kind, res)
	if res.Detail == detailTimeout {
		res.Detail = "timeout after " + budget.Round(time.Millisecond).String()
	}
	return res
}

// Close releases the shared SIP user agent and idle HTTP connections. Probes started
// after Close fail with "prober closed".
func (p *Prober) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.transport.CloseIdleConnections()
	_ = p.udp4.Close()
	// The SIP stack pools a TCP connection under two keys and closes it twice; that
	// second close is not a failure.
	if err := p.ua.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close prober: %w", err)
	}
	return nil
}

// detailTimeout marks a probe that ran out of time; Probe replaces it with
// "timeout after <budget>", the budget being the configured timeout or the caller's
// earlier deadline.
const detailTimeout = "timeout"

// failure is a failed Result whose Detail describes err.
func failure(ctx context.Context, err error) Result {
	return Result{Detail: describe(ctx, err)}
}

// describe turns err into a short reason an operator reads in the node's probe history.
func describe(ctx context.Context, err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(ctx.Err(), context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return detailTimeout
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.As(err, &dnsErr):
		return "cannot resolve " + dnsErr.Name
	}
	return shorten(err.Error())
}

// shorten keeps a Detail short enough for a table cell.
func shorten(s string) string {
	const maxDetail = 160
	if len(s) <= maxDetail {
		return s
	}
	return s[:maxDetail-3] + "..."
}

// discardLogger swallows the SIP stack's logs when the caller gives no logger.
var discardLogger = slog.New(slog.DiscardHandler)
