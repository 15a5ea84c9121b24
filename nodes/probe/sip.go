package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// newUA creates a sipgo user agent whose transport and transaction layers log to logger.
// Responses that match no transaction (late retransmissions, stray or forged answers) are
// dropped silently: for a prober they are noise, not news.
func newUA(name string, logger *slog.Logger) (*sipgo.UserAgent, error) {
	return sipgo.NewUA(
		sipgo.WithUserAgent(name),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(logger)),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(logger),
			sip.WithTransactionLayerUnhandledResponseHandler(func(*sip.Response) {}),
		),
	)
}

// newUDP4Socket opens the one UDP socket the prober sends its OPTIONS to IPv4 addresses
// from, served by ua's transport layer (which reads the answers and hands them to their
// transactions), and a client that sends from it. Left to itself the SIP stack opens a
// socket, a reader goroutine and a 32 KB read buffer for every node it probes: about
// 30 MB for 1,000 nodes. Probes over TCP, to IPv6 addresses or to host names keep the
// stack's own connections.
func newUDP4Socket(ua *sipgo.UserAgent, logger *slog.Logger) (net.PacketConn, *sipgo.Client, error) {
	conn, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return nil, nil, fmt.Errorf("sip probe socket: %w", err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(logger), sipgo.WithClientNAT(),
		sipgo.WithClientConnectionAddr(conn.LocalAddr().String()))
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("sip probe client: %w", err)
	}
	served := make(chan error, 1)
	go func() { served <- ua.TransportLayer().ServeUDP(conn) }() // until the socket closes
	// The client finds the socket in the stack's pool, which serving adds it to.
	addr := conn.LocalAddr().String()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if c, _ := ua.TransportLayer().GetConnection("udp", addr); c != nil {
			return conn, client, nil
		}
		select {
		case err := <-served:
			_ = conn.Close()
			return nil, nil, fmt.Errorf("sip probe socket: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = conn.Close()
			return nil, nil, errors.New("sip probe socket: not served in 10s")
		}
	}
}

// probeSIP sends one OPTIONS request to address and judges the final response.
func (p *Prober) probeSIP(ctx context.Context, address string) Result {
	host, port, transport, err := ParseSIPAddress(address)
	if err != nil {
		return Result{Detail: shorten(err.Error())}
	}
	uri := sip.Uri{Scheme: "sip", Host: host, Port: port}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		uri.Host = "[" + host + "]"
	}
	if transport == "tcp" {
		uri.UriParams = sip.NewParams()
		uri.UriParams.Add("transport", "tcp")
	}
	req := sip.NewRequest(sip.OPTIONS, uri)
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))

	client := p.sipClient
	if ip := net.ParseIP(host); transport == "udp" && ip != nil && ip.To4() != nil {
		client = p.udp4Client
	}
	tx, err := client.TransactionRequest(ctx, req)
	if err != nil {
		return failure(ctx, err)
	}
	defer tx.Terminate()

	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return p.judgeSIP(req, res)
		case <-tx.Done():
			err := tx.Err()
			if err == nil {
				err = errors.New("transaction ended without a response")
			}
			return failure(ctx, err)
		case <-ctx.Done():
			if transport == "tcp" {
				// A pooled TCP connection that carried no answer may be half-open (the peer
				// rebooted): close it so the next probe dials afresh instead of writing into
				// a dead connection until the kernel gives up minutes later.
				if c, ok := tx.(interface{ Connection() sip.Connection }); ok && c.Connection() != nil {
					_ = c.Connection().Close()
				}
			}
			return failure(ctx, ctx.Err())
		}
	}
}

// judgeSIP decides whether res is a healthy answer to req. sipgo matches a response to its
// transaction by Via branch and CSeq method only, so a response that carries another
// dialog's Call-ID or CSeq is checked here and refused.
func (p *Prober) judgeSIP(req *sip.Request, res *sip.Response) Result {
	status := strconv.Itoa(res.StatusCode)
	if res.Reason != "" {
		status += " " + res.Reason
	}
	status = shorten(status)
	if rid, sid := req.CallID(), res.CallID(); rid == nil || sid == nil || rid.Value() != sid.Value() {
		return Result{Detail: "Call-ID mismatch in " + status}
	}
	if rc, sc := req.CSeq(), res.CSeq(); rc == nil || sc == nil || rc.SeqNo != sc.SeqNo || sc.MethodName != sip.OPTIONS {
		return Result{Detail: "CSeq mismatch in " + status}
	}
	ok := res.StatusCode >= 200 && res.StatusCode <= 299
	if p.sipOK != nil {
		ok = p.sipOK[res.StatusCode]
	}
	return Result{OK: ok, Detail: status}
}

// sipEndpoint is a SIP UAS answering OPTIONS with 200 OK over UDP and TCP on one port.
type sipEndpoint struct {
	ua  *sipgo.UserAgent
	udp net.PacketConn
	tcp net.Listener
}

// listenSIP binds UDP and TCP on the same port. With port 0 it retries a few times, since
// the UDP port the kernel picks may be taken on TCP.
func listenSIP(listen string) (net.PacketConn, net.Listener, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen address %q: %w", listen, err)
	}
	attempts := 1
	if portStr == "0" {
		attempts = 20
	}
	var lastErr error
	for range attempts {
		udp, err := net.ListenPacket("udp", listen)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", listen, err)
		}
		port := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			return udp, tcp, nil
		}
		_ = udp.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("listen tcp on the SIP UDP port: %w", lastErr)
}

func newSIPEndpoint(listen string) (*sipEndpoint, error) {
	udp, tcp, err := listenSIP(listen)
	if err != nil {
		return nil, err
	}
	ua, err := newUA("callplane-nodeagent", discardLogger)
	if err != nil {
		_ = udp.Close()
		_ = tcp.Close()
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(discardLogger))
	if err != nil {
		_ = ua.Close()
		_ = udp.Close()
		_ = tcp.Close()
		return nil, fmt.Errorf("sip server: %w", err)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", "OPTIONS"))
		_ = tx.Respond(res)
	})
	return &sipEndpoint{ua: ua, udp: udp, tcp: tcp}, nil
}

// serve runs until the sockets are closed.
func (s *sipEndpoint) serve() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.ua.TransportLayer().ServeTCP(s.tcp)
	}()
	_ = s.ua.TransportLayer().ServeUDP(s.udp)
	<-done
}

func (s *sipEndpoint) address() string {
	return hostPortForClients(s.udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().String(),
		s.udp.LocalAddr().(*net.UDPAddr).Port)
}

func (s *sipEndpoint) close() error {
	errUDP := s.udp.Close()
	errTCP := s.tcp.Close()
	// Closing the user agent ends open transactions and accepted TCP connections.
	errUA := s.ua.Close()
	return errors.Join(errUDP, errTCP, errUA)
}
