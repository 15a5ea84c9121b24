package sipfront

import (
	"errors"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/callplane/callplane/nodes"
)

// routes registers one dispatcher for every method.
func (f *Front) routes() {
	for _, m := range []sip.RequestMethod{sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS, sip.REGISTER,
		sip.UPDATE, sip.INFO, sip.PRACK, sip.REFER, sip.NOTIFY, sip.MESSAGE, sip.SUBSCRIBE, sip.PUBLISH} {
		f.srv.OnRequest(m, f.dispatch)
	}
	f.srv.OnNoRoute(f.dispatch)
}

// dispatch sends requests with a To tag down the dialog's route and
// handles the others: an INVITE starts a call, OPTIONS is answered here
// (trunks probe the front door with it), the rest get 405.
func (f *Front) dispatch(req *sip.Request, tx sip.ServerTransaction) {
	if to := req.To(); to != nil && to.Params != nil && to.Params.Has("tag") {
		f.inDialog(req, tx)
		return
	}
	switch req.Method {
	case sip.INVITE:
		f.invite(req, tx)
	case sip.OPTIONS:
		f.reply(tx, req, 200, "OK", sip.NewHeader("Allow", allowed), sip.NewHeader("Accept", "application/sdp"))
	case sip.ACK:
		// An ACK outside any dialog or transaction: nothing to do.
	case sip.CANCEL:
		f.reply(tx, req, 481, "Call/Transaction Does Not Exist")
	default:
		f.reply(tx, req, 405, "Method Not Allowed", sip.NewHeader("Allow", allowed))
	}
}

// inDialog routes a request inside an established dialog. The dialog's
// row says which side set the call up and which node runs it now: a
// request from the caller goes to that node (the work may have moved
// since the INVITE), a request from the node goes on along its route set
// toward the caller. A BYE that completes ends the call's work.
func (f *Front) inDialog(req *sip.Request, tx sip.ServerTransaction) {
	f.stats.InDialog.Add(1)
	if f.tooManyHops(req, tx) {
		return
	}
	callID := req.CallID()
	fromTag, _ := req.From().Params.Get("tag")
	toTag, _ := req.To().Params.Get("tag")
	if callID == nil {
		f.reply(tx, req, 400, "Bad Request: Call-ID is required")
		return
	}
	refs := []string{CallRef(callID.Value(), fromTag), CallRef(callID.Value(), toTag)}
	var route nodes.CallRoute
	var err error
	if ref, d, ok := f.dialogs.get(refs...); ok {
		route = nodes.CallRoute{Ref: ref, FromTag: d.fromTag, State: nodes.CallAnswered, NodeAddress: d.nodeAddr}
	} else {
		route, err = f.calls.LookupCall(f.bg, callID.Value(), refs)
	}
	if err != nil {
		if !errors.Is(err, nodes.ErrNotFound) {
			f.log.Error("look up SIP dialog", "err", err)
			f.unavailable(tx, req)
			return
		}
		f.reply(tx, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	fwd := req.Clone()
	var next hop
	if fromTag == route.FromTag {
		if !route.Live() || route.NodeAddress == "" {
			f.reply(tx, req, 481, "Call/Transaction Does Not Exist")
			return
		}
		if next, err = nodeHop(route.NodeAddress); err != nil {
			f.unavailable(tx, req)
			return
		}
	} else {
		f.popOwnRoutes(fwd)
		if r := fwd.Route(); r != nil {
			next = uriHop(r.Address)
		} else {
			next = uriHop(fwd.Recipient)
		}
	}
	f.prepareForward(fwd, next, req.Transport(), false)
	if req.IsAck() {
		if err := f.client.WriteRequest(fwd, sipgo.ClientRequestAddVia); err != nil {
			f.log.Debug("forward ACK", "err", err)
		}
		return
	}
	var beforeFinal func(code int)
	if req.Method == sip.BYE {
		beforeFinal = func(code int) {
			if code == 401 || code == 407 {
				return // challenged: the dialog goes on
			}
			// The dialog is over whatever the BYE's answer (RFC 3261
			// section 15.1.1): a 2xx, or a node that no longer knows the
			// call. The caller gets the answer once the end is durable;
			// until then it holds the BYE and retransmits it.
			f.dialogs.forget(route.Ref)
			f.awaitEnd(f.writer.end(nodes.CallEnd{Ref: route.Ref, State: nodes.CallEnded, Cause: "bye"}))
		}
	}
	f.forward(req, tx, fwd, beforeFinal)
}

// awaitEnd waits until a queued call end is committed, the front door
// stops, or the caller has given up retransmitting.
func (f *Front) awaitEnd(done <-chan struct{}) {
	t := time.NewTimer(holdEnd)
	defer t.Stop()
	select {
	case <-done:
	case <-f.bg.Done():
	case <-t.C:
	}
}

// forward runs a client transaction for an in-dialog request and relays
// its responses; beforeFinal, when set, runs before the final response
// (a 408 when the next hop never answered) is sent back.
func (f *Front) forward(req *sip.Request, tx sip.ServerTransaction, fwd *sip.Request, beforeFinal func(code int)) {
	final := func(code int) {
		if beforeFinal != nil {
			beforeFinal(code)
		}
	}
	clTx, err := f.client.TransactionRequest(f.bg, fwd, sipgo.ClientRequestAddVia)
	if err != nil {
		final(503)
		f.reply(tx, req, 503, "Service Unavailable")
		return
	}
	defer clTx.Terminate()
	for {
		select {
		case res, ok := <-clTx.Responses():
			if !ok {
				continue
			}
			if res.StatusCode == 100 {
				continue
			}
			if !res.IsProvisional() {
				final(int(res.StatusCode))
				f.relay(tx, req, res)
				return
			}
			f.relay(tx, req, res)
		case <-clTx.Done():
			final(408)
			f.reply(tx, req, 408, "Request Timeout")
			return
		}
	}
}
