package sipfront

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

// Failure causes recorded with calls and failed tries. They are few and
// fixed so the portal can count them.
const (
	causeTimeout   = "timeout"
	causeTransport = "transport error"
	causeNoNode    = "no media node available"
	causeExhausted = "all tries failed"
	causeCancelled = "cancelled"
	causeNoAnswer  = "no final answer"
)

// call is one initial INVITE being set up.
type call struct {
	f          *Front
	req        *sip.Request
	tx         sip.ServerTransaction
	id         nodes.CallIdentity
	cancelled  chan struct{} // closed when the caller cancels
	cancelOnce sync.Once
}

type outcomeKind int

const (
	outFailover outcomeKind = iota
	outAnswered
	outRejected
	outCancelled
)

type outcome struct {
	kind     outcomeKind
	cause    string
	timedOut bool
	took     time.Duration
	toTag    string
}

// invite handles an initial INVITE (one without a To tag).
func (f *Front) invite(req *sip.Request, tx sip.ServerTransaction) {
	f.stats.Invites.Add(1)
	if f.tooManyHops(req, tx) {
		return
	}
	callID, from, to := req.CallID(), req.From(), req.To()
	var fromTag string
	if from != nil {
		fromTag, _ = from.Params.Get("tag")
	}
	if callID == nil || to == nil || fromTag == "" || callID.Value() == "" {
		f.reply(tx, req, 400, "Bad Request: Call-ID, From tag and To are required")
		return
	}
	// 100 Trying at once (RFC 3261 section 16.2), as Kamailio's tm does:
	// the caller stops retransmitting the INVITE while the call is placed.
	f.reply(tx, req, 100, "Trying")
	c := &call{f: f, req: req, tx: tx, cancelled: make(chan struct{}), id: nodes.CallIdentity{
		Ref: CallRef(callID.Value(), fromTag), CallID: truncate(callID.Value(), maxURILen), FromTag: truncate(fromTag, maxURILen),
		FromURI: truncate(from.Address.String(), maxURILen), ToURI: truncate(to.Address.String(), maxURILen),
		Instance: f.cfg.Instance,
	}}
	tx.OnCancel(func(*sip.Request) { c.cancel() })
	c.run()
}

func (c *call) cancel() { c.cancelOnce.Do(func() { close(c.cancelled) }) }

func (c *call) isCancelled() bool {
	select {
	case <-c.cancelled:
		return true
	default:
		return false
	}
}

// run places the call and offers it to one node after another, as
// Kamailio's dispatcher does with ds_select_dst and ds_next_dst.
func (c *call) run() {
	f := c.f
	st := f.Settings()
	ctx := f.bg
	var exclude []int64
	for try := 1; ; try++ {
		var t nodes.CallTarget
		var err error
		if try == 1 {
			// First tries are placed in batches (group commit).
			if t, err = f.writer.place(ctx, c.id); err == nil && t.Merged {
				err = nodes.ErrMergedCall
			}
		} else {
			t, err = f.calls.PlaceSIPCall(ctx, c.id, exclude, true)
		}
		if errors.Is(err, nodes.ErrMergedCall) {
			f.reply(c.tx, c.req, 482, "Loop Detected")
			return
		}
		if err != nil {
			f.log.Error("place SIP call", "ref", c.id.Ref, "err", err)
			f.stats.Failed.Add(1)
			f.unavailable(c.tx, c.req)
			return
		}
		if t.NodeID == 0 {
			cause := causeNoNode
			if try > 1 {
				cause = causeExhausted
			}
			c.end(nodes.CallFailed, cause, try == 1)
			f.unavailable(c.tx, c.req)
			return
		}
		if try > 1 {
			f.writer.notify(t.NodeID) // first tries are notified by their batch
		}
		out := c.try(t, st)
		switch out.kind {
		case outAnswered:
			f.stats.Answered.Add(1)
			f.writer.answered(nodes.CallAnswer{Ref: c.id.Ref, ToTag: truncate(out.toTag, maxURILen), At: time.Now()})
			return
		case outRejected:
			c.end(nodes.CallFailed, out.cause, false)
			return
		case outCancelled:
			c.end(nodes.CallEnded, causeCancelled, false)
			return
		}
		// Failover: this node is done with the call.
		f.stats.Failovers.Add(1)
		nodeID, err := f.calls.FailoverCall(ctx, c.id.Ref, out.cause)
		if err != nil {
			f.log.Error("end a failed SIP try", "ref", c.id.Ref, "node", t.NodeName, "err", err)
		}
		f.writer.notify(nodeID)
		if out.timedOut {
			detail := fmt.Sprintf("SIP front door: INVITE got no response within %s", st.TryTimeout)
			if err := f.calls.CallNodeTimedOut(ctx, t.NodeID, out.took, detail); err != nil {
				f.log.Error("count a timed-out node as a failed probe", "node", t.NodeName, "err", err)
			}
		}
		f.log.Info("SIP call failed over", "ref", c.id.Ref, "node", t.NodeName, "cause", out.cause, "try", try)
		exclude = append(exclude, t.NodeID)
		if c.isCancelled() {
			c.end(nodes.CallEnded, causeCancelled, false)
			return
		}
		if try >= st.Tries {
			c.end(nodes.CallFailed, causeExhausted, false)
			f.unavailable(c.tx, c.req)
			return
		}
	}
}

// end ends the call's work and records how the call ended: in the next
// grouped write, or at once with record (the call has no row yet).
func (c *call) end(state, cause string, record bool) {
	if state == nodes.CallFailed {
		c.f.stats.Failed.Add(1)
	}
	if !record {
		c.f.writer.end(nodes.CallEnd{Ref: c.id.Ref, State: state, Cause: cause})
		return
	}
	nodeID, _, err := c.f.calls.EndCall(c.f.bg, c.id, state, cause, record)
	if err != nil {
		c.f.log.Error("end SIP call", "ref", c.id.Ref, "cause", cause, "err", err)
		return
	}
	c.f.writer.notify(nodeID)
}

// try forwards the INVITE to one node in a client transaction and relays
// what comes back, until a final answer, a failure that calls for the next
// node, or the caller's CANCEL.
func (c *call) try(t nodes.CallTarget, st settings.SIP) outcome {
	f := c.f
	start := time.Now()
	failover := func(cause string, timedOut bool) outcome {
		return outcome{kind: outFailover, cause: cause, timedOut: timedOut, took: time.Since(start)}
	}
	next, err := nodeHop(t.Address)
	if err != nil {
		return failover(causeTransport, false)
	}
	fwd := c.req.Clone()
	f.prepareForward(fwd, next, c.req.Transport(), true)
	ctx, cancel := context.WithTimeout(f.bg, st.TryTimeout)
	clTx, err := f.client.TransactionRequest(ctx, fwd, sipgo.ClientRequestAddVia)
	cancel()
	if err != nil {
		f.log.Debug("forward INVITE", "node", t.NodeName, "err", err)
		return failover(causeTransport, false)
	}
	defer clTx.Terminate()
	clTx.OnRetransmission(func(res *sip.Response) {
		if res.IsSuccess() {
			f.relay(c.tx, c.req, res)
		}
	})
	timer := time.NewTimer(st.TryTimeout)
	defer timer.Stop()
	provisional, cancelWanted, cancelSent := false, false, false
	cancelled, callerDone := (<-chan struct{})(c.cancelled), c.tx.Done()
	responses := clTx.Responses()
	sendCancel := func() {
		if !cancelSent {
			cancelSent = true
			f.cancelDownstream(fwd)
		}
	}
	for {
		select {
		case res, ok := <-responses:
			if !ok {
				responses = nil
				continue
			}
			code := int(res.StatusCode)
			if code < 200 {
				if !provisional {
					provisional = true
					timer.Stop()
				}
				if cancelWanted {
					sendCancel()
				} else if code > 100 {
					f.relay(c.tx, c.req, res)
				}
				continue
			}
			if cancelWanted {
				if res.IsSuccess() {
					// The answer crossed the CANCEL: the caller has its
					// 487, so the callee's leg is hung up here.
					f.hangUp(fwd, res)
				}
				return outcome{kind: outCancelled}
			}
			if code == 408 || res.IsServerError() {
				return failover(strconv.Itoa(code), false)
			}
			if res.IsSuccess() {
				// Known before the caller sees the 2xx, so its ACK and a
				// quick BYE are routed from memory.
				f.dialogs.put(c.id.Ref, c.id.FromTag, t.Address)
			}
			f.relay(c.tx, c.req, res)
			if res.IsSuccess() {
				tag := ""
				if to := res.To(); to != nil {
					tag, _ = to.Params.Get("tag")
				}
				return outcome{kind: outAnswered, toTag: tag}
			}
			return outcome{kind: outRejected, cause: "rejected " + strconv.Itoa(code)}
		case <-timer.C:
			if cancelWanted {
				return outcome{kind: outCancelled}
			}
			return failover(causeTimeout, true)
		case <-clTx.Done():
			if cancelWanted {
				return outcome{kind: outCancelled}
			}
			if !provisional {
				if errors.Is(clTx.Err(), sip.ErrTransactionTimeout) {
					return failover(causeTimeout, true)
				}
				return failover(causeTransport, false)
			}
			// It rang but never answered (Timer B): the caller gets 408.
			f.reply(c.tx, c.req, 408, "Request Timeout")
			return outcome{kind: outRejected, cause: causeNoAnswer}
		case <-cancelled:
			cancelled = nil
			cancelWanted = true
			// A CANCEL may only follow a provisional response (RFC 3261
			// section 9.1); without one, it waits for it or the timer.
			if provisional {
				sendCancel()
			}
		case <-callerDone:
			callerDone = nil
			if !cancelWanted {
				// The caller's transaction died (its transport failed):
				// nobody is left to answer.
				cancelWanted = true
				if provisional {
					sendCancel()
				}
			}
		}
	}
}

// cancelDownstream sends a CANCEL for a forwarded INVITE: the same
// Request-URI, top Via, Call-ID, From, To and CSeq number (RFC 3261
// section 9.1), to the same destination.
func (f *Front) cancelDownstream(inv *sip.Request) {
	req := sip.NewRequest(sip.CANCEL, inv.Recipient)
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	for _, name := range []string{"Route"} {
		for _, h := range inv.GetHeaders(name) {
			req.AppendHeader(sip.HeaderClone(h))
		}
	}
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetTransport(inv.Transport())
	req.SetDestination(inv.Destination())
	req.Laddr = inv.Laddr
	f.sendAndForget(req)
}

// hangUp ends a callee's leg the caller no longer wants: ACK its 2xx and
// send a BYE, both to the node that answered.
func (f *Front) hangUp(inv *sip.Request, res *sip.Response) {
	target := inv.Recipient
	if ct := res.Contact(); ct != nil {
		target = ct.Address
	}
	build := func(method sip.RequestMethod, seq uint32) *sip.Request {
		req := sip.NewRequest(method, target)
		req.AppendHeader(sip.HeaderClone(inv.From()))
		req.AppendHeader(sip.HeaderClone(res.To()))
		req.AppendHeader(sip.HeaderClone(inv.CallID()))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		mf := sip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
		req.SetTransport(inv.Transport())
		req.SetDestination(inv.Destination())
		req.Laddr = inv.Laddr
		return req
	}
	ack := build(sip.ACK, inv.CSeq().SeqNo)
	if err := f.client.WriteRequest(ack, sipgo.ClientRequestAddVia); err != nil {
		f.log.Debug("ACK a 2xx after CANCEL", "err", err)
	}
	f.sendAndForget(build(sip.BYE, inv.CSeq().SeqNo+1))
}

// sendAndForget runs a request's client transaction in the background,
// draining its responses until it ends.
func (f *Front) sendAndForget(req *sip.Request) {
	opt := sipgo.ClientRequestOption(func(*sipgo.Client, *sip.Request) error { return nil })
	if req.Via() == nil {
		opt = sipgo.ClientRequestAddVia
	}
	tx, err := f.client.TransactionRequest(f.bg, req, opt)
	if err != nil {
		f.log.Debug("send SIP request", "method", string(req.Method), "err", err)
		return
	}
	go func() {
		defer tx.Terminate()
		for {
			select {
			case res := <-tx.Responses():
				if res != nil && !res.IsProvisional() {
					return
				}
			case <-tx.Done():
				return
			}
		}
	}()
}
