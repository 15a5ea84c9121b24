package sipfront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

// Calls is what the front door needs from the cluster domain.
type Calls interface {
	PlaceSIPCall(ctx context.Context, id nodes.CallIdentity, exclude []int64, retry bool) (nodes.CallTarget, error)
	CommitCalls(ctx context.Context, b nodes.CallBatch, instance string) (nodes.CallBatchResult, error)
	FailoverCall(ctx context.Context, ref, cause string) (int64, error)
	EndCall(ctx context.Context, id nodes.CallIdentity, state, cause string, record bool) (int64, bool, error)
	LookupCall(ctx context.Context, callID string, refs []string) (nodes.CallRoute, error)
	ExpireCalls(ctx context.Context, maxAge time.Duration) (int, error)
	PruneCalls(ctx context.Context) (int64, error)
	CallNodeTimedOut(ctx context.Context, nodeID int64, took time.Duration, detail string) error
	CallSettings(ctx context.Context) (map[string]string, error)
	NotifyNodes(ctx context.Context, nodeIDs ...int64)
}

// udpBuffer is the receive and send buffer asked for the UDP socket.
const udpBuffer = 4 << 20

// Config sets the front door up.
type Config struct {
	// Listen is host:port for SIP over UDP and TCP (port 0 picks one, the
	// same for both).
	Listen string
	// Public is the host:port written into Record-Route, for several
	// instances behind one address; empty: the bound listen address.
	Public string
	// Instance names this call manager instance in the call rows.
	Instance string
	Log      *slog.Logger
}

// Front is a running SIP front door.
type Front struct {
	cfg        Config
	calls      Calls
	log        *slog.Logger
	ua         *sipgo.UserAgent
	srv        *sipgo.Server
	client     *sipgo.Client
	udp        net.PacketConn
	tcp        net.Listener
	listenHost string
	listenPort int
	udpLaddr   sip.Addr // the UDP listener, which forwarded requests leave from
	publicHost string
	publicPort int
	settings   atomic.Pointer[settings.SIP]
	writer     *writer
	dialogs    dialogCache
	bg         context.Context // lives as long as Run; calls outlive requests
	stats      Counters
}

// Counters are this instance's totals since it started.
type Counters struct {
	Invites   atomic.Int64 // initial INVITEs received
	Answered  atomic.Int64 // calls that got a 2xx
	Failed    atomic.Int64 // calls refused or failed
	Failovers atomic.Int64 // tries that went to the next node
	InDialog  atomic.Int64 // in-dialog requests routed
}

// New binds the UDP and TCP sockets (so the address is known before Run)
// and prepares the proxy.
func New(cfg Config, calls Calls) (*Front, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f := &Front{cfg: cfg, calls: calls, log: cfg.Log.With("component", "sip"), bg: context.Background()}
	def := settings.DefaultSIP()
	f.settings.Store(&def)
	if err := f.bind(cfg.Listen); err != nil {
		return nil, err
	}
	f.publicHost, f.publicPort = f.listenHost, f.listenPort
	if cfg.Public != "" {
		host, port, err := splitHostPort(cfg.Public)
		if err != nil {
			f.closeSockets()
			return nil, fmt.Errorf("--sip-public %q: %w", cfg.Public, err)
		}
		f.publicHost, f.publicPort = host, port
	}
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("Callplane"),
		sipgo.WithUserAgentHostname(f.publicHost),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerUnhandledResponseHandler(f.onStrayResponse)),
	)
	if err != nil {
		f.closeSockets()
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	f.ua = ua
	if f.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(f.log)); err != nil {
		f.closeSockets()
		return nil, fmt.Errorf("sip server: %w", err)
	}
	viaHost := f.listenHost
	if ip := net.ParseIP(viaHost); ip != nil && ip.IsUnspecified() {
		viaHost = f.publicHost
	}
	if f.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname(viaHost), sipgo.WithClientPort(f.listenPort),
		sipgo.WithClientLogger(f.log)); err != nil {
		f.closeSockets()
		return nil, fmt.Errorf("sip client: %w", err)
	}
	f.writer = newWriter(calls, cfg.Instance, f.log)
	f.routes()
	return f, nil
}

// bind listens on UDP and TCP at the same port.
func (f *Front) bind(listen string) error {
	host, port, err := splitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--sip-listen %q: %w", listen, err)
	}
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("listen for SIP on udp %s: %w", listen, err)
		}
		bound := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(bound)))
		if err != nil {
			udp.Close()
			// Port 0 picked a UDP port whose TCP twin is taken: pick again.
			if port == 0 && attempt < 20 {
				continue
			}
			return fmt.Errorf("listen for SIP on tcp %s: %w", listen, err)
		}
		// A deep receive buffer rides out the moments the reading
		// goroutine waits for a CPU: a datagram the kernel drops costs
		// its sender a retransmission 500 ms later (T1). The kernel caps
		// it at net.core.rmem_max.
		if uc, ok := udp.(*net.UDPConn); ok {
			_ = uc.SetReadBuffer(udpBuffer)
			_ = uc.SetWriteBuffer(udpBuffer)
		}
		f.udp, f.tcp, f.listenHost, f.listenPort = udp, tcp, host, bound
		la := udp.LocalAddr().(*net.UDPAddr)
		f.udpLaddr = sip.Addr{IP: la.IP, Port: la.Port}
		return nil
	}
}

func (f *Front) closeSockets() {
	if f.udp != nil {
		f.udp.Close()
	}
	if f.tcp != nil {
		f.tcp.Close()
	}
}

// Addr is the bound listen address (UDP and TCP).
func (f *Front) Addr() string { return net.JoinHostPort(f.listenHost, strconv.Itoa(f.listenPort)) }

// Public is the address written into Record-Route.
func (f *Front) Public() string { return net.JoinHostPort(f.publicHost, strconv.Itoa(f.publicPort)) }

// Settings returns the settings in force.
func (f *Front) Settings() settings.SIP { return *f.settings.Load() }

// Stats returns this instance's counters.
func (f *Front) Stats() *Counters { return &f.stats }

// Run serves SIP until ctx ends, with the settings refresh, the grouped
// writes and the maximum-duration sweep beside it.
func (f *Front) Run(ctx context.Context) {
	f.bg = ctx
	f.refreshSettings(ctx)
	var wg sync.WaitGroup
	serve := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				f.log.Error("SIP listener stopped", "transport", name, "err", err)
			}
		}()
	}
	serve("udp", func() error { return f.srv.ServeUDP(f.udp) })
	serve("tcp", func() error { return f.srv.ServeTCP(f.tcp) })
	wg.Add(2)
	go func() { defer wg.Done(); f.writer.run(ctx) }()
	go func() { defer wg.Done(); f.housekeeping(ctx) }()
	f.log.Info("SIP front door listening", "listen", f.Addr(), "public", f.Public(), "settings", f.Settings().String())
	<-ctx.Done()
	f.closeSockets()
	f.ua.Close()
	wg.Wait()
}

// housekeeping refreshes the settings, ends calls past the maximum
// duration and prunes old call rows.
func (f *Front) housekeeping(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	lastSweep := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.refreshSettings(ctx)
		f.dialogs.sweep()
		if time.Since(lastSweep) < 30*time.Second {
			continue
		}
		lastSweep = time.Now()
		n, err := f.calls.ExpireCalls(ctx, f.Settings().MaxDuration)
		if err != nil && ctx.Err() == nil {
			f.log.Error("end calls past the maximum duration", "err", err)
		} else if n > 0 {
			f.log.Warn("calls ended at the maximum call duration", "nodes", n, "max", f.Settings().MaxDuration)
		}
		if _, err := f.calls.PruneCalls(ctx); err != nil && ctx.Err() == nil {
			f.log.Error("prune ended calls", "err", err)
		}
	}
}

func (f *Front) refreshSettings(ctx context.Context) {
	v, err := f.calls.CallSettings(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("read SIP settings", "err", err)
		}
		return
	}
	s, errs := settings.ParseSIP(v)
	for k, e := range errs {
		f.log.Warn("ignoring a stored SIP setting", "key", k, "err", e)
	}
	f.settings.Store(&s)
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}
