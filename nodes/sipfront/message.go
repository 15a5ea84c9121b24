package sipfront

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/safetext"
)

// allowed lists the methods the front door handles, for Allow headers.
const allowed = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, MESSAGE"

// maxURILen bounds the From and To URIs stored with a call.
const maxURILen = 512

// hop is where a request goes next.
type hop struct {
	host      string
	port      int
	transport string // "udp" or "tcp"
}

func (h hop) addr() string { return net.JoinHostPort(h.host, strconv.Itoa(h.port)) }

// nodeHop parses a media node's service address.
func nodeHop(address string) (hop, error) {
	host, port, transport, err := probe.ParseSIPAddress(address)
	return hop{host: host, port: port, transport: transport}, err
}

// uriHop is the next hop a URI (a Route entry or a Request-URI) names.
func uriHop(u sip.Uri) hop {
	h := hop{host: u.Host, port: u.Port, transport: "udp"}
	if h.port == 0 {
		h.port = 5060
	}
	if u.UriParams != nil {
		if tp, ok := u.UriParams.Get("transport"); ok && strings.EqualFold(tp, "tcp") {
			h.transport = "tcp"
		}
	}
	return h
}

// isOwn reports whether a URI names this front door, by its public or its
// listen address.
func (f *Front) isOwn(u sip.Uri) bool {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	return (port == f.publicPort && strings.EqualFold(u.Host, f.publicHost)) ||
		(port == f.listenPort && strings.EqualFold(u.Host, f.listenHost))
}

// popOwnRoutes removes the Route entries at the top that name this proxy
// (RFC 3261 section 16.4).
func (f *Front) popOwnRoutes(req *sip.Request) {
	for {
		r := req.Route()
		if r == nil || !f.isOwn(r.Address) {
			return
		}
		req.RemoveHeader("Route")
	}
}

// recordRoute is this front door's Record-Route entry for one transport.
func (f *Front) recordRoute(transport string) *sip.RecordRouteHeader {
	return &sip.RecordRouteHeader{Address: sip.Uri{
		Scheme: "sip", Host: f.publicHost, Port: f.publicPort,
		UriParams: sip.HeaderParams{{K: "transport", V: transport}, {K: "lr", V: ""}},
	}}
}

// prepareForward readies a copy of a received request for the next hop:
// own Route entries popped, Max-Forwards decremented, Record-Route added
// when asked (twice when the two legs use different transports, so each
// side sees the address it can reach), transport and destination set.
func (f *Front) prepareForward(fwd *sip.Request, next hop, inTransport string, recordRoute bool) {
	f.popOwnRoutes(fwd)
	mf := uint32(70)
	if h := fwd.MaxForwards(); h != nil {
		mf = h.Val()
		fwd.RemoveHeader("Max-Forwards")
	}
	// A new header: sipgo's clone shares this one with the original, which
	// the next try would otherwise decrement again.
	m := sip.MaxForwardsHeader(mf - 1)
	fwd.AppendHeader(&m)
	if recordRoute {
		in := strings.ToLower(inTransport)
		if in != next.transport {
			fwd.PrependHeader(f.recordRoute(in))
		}
		fwd.PrependHeader(f.recordRoute(next.transport))
	}
	fwd.SetTransport(strings.ToUpper(next.transport))
	fwd.SetDestination(next.addr())
	if next.transport == "udp" {
		fwd.Laddr = f.udpLaddr
	} else {
		fwd.Laddr = sip.Addr{}
	}
}

// tooManyHops answers 483 when Max-Forwards is spent.
func (f *Front) tooManyHops(req *sip.Request, tx sip.ServerTransaction) bool {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		f.reply(tx, req, 483, "Too Many Hops")
		return true
	}
	return false
}

// reply answers a request with a response of our own.
func (f *Front) reply(tx sip.ServerTransaction, req *sip.Request, code int, reason string, headers ...sip.Header) {
	if tx == nil || req.IsAck() {
		return
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range headers {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		f.log.Debug("send SIP response", "code", code, "err", err)
	}
}

// unavailable answers 503 with Retry-After, as Kamailio's dispatcher does
// when no destination is left.
func (f *Front) unavailable(tx sip.ServerTransaction, req *sip.Request) {
	f.reply(tx, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
}

// relay sends a response from the next hop back to the previous one, with
// our Via removed (RFC 3261 section 16.7).
func (f *Front) relay(tx sip.ServerTransaction, req *sip.Request, res *sip.Response) {
	r := res.Clone()
	r.RemoveHeader("Via")
	r.SetDestination(req.Source())
	if err := tx.Respond(r); err != nil {
		f.log.Debug("relay SIP response", "code", int(res.StatusCode), "err", err)
	}
}

// onStrayResponse forwards, statelessly, a 2xx to an INVITE that arrives
// after its transaction ended (the callee retransmits it until the ACK
// arrives); anything else matching no transaction is dropped.
func (f *Front) onStrayResponse(res *sip.Response) {
	via := res.Via()
	if !res.IsSuccess() || via == nil || !f.isOwn(sip.Uri{Host: via.Host, Port: via.Port}) {
		return
	}
	r := res.Clone()
	r.RemoveHeader("Via")
	next := r.Via()
	if next == nil {
		// A response to a request the front door itself sent (a BYE
		// after a CANCEL crossed an answer): it ends here.
		return
	}
	r.SetTransport(next.Transport)
	if err := f.srv.WriteResponse(r); err != nil {
		f.log.Debug("forward retransmitted 2xx", "err", err)
	}
}

func truncate(s string, n int) string {
	// Network text is stored: no NUL or control characters, and never a
	// UTF-8 sequence cut in half (Postgres refuses both).
	return safetext.Sanitize(s, n)
}
