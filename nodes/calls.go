package nodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// The SIP front door's view of the cluster: calls as work items of kind
// "call" with a sip_calls row each. The hot path is CommitCalls: the
// front door's new calls, answers and ends of one moment in one
// transaction (one commit for all of them), because every call setup is
// durable and the front door must keep pace with a dedicated SIP proxy.
// The rare steps (a failover try, a call refused before any node) are
// one statement each.

// Call states and the causes the front door records.
const (
	CallSetup    = "setup"
	CallAnswered = "answered"
	CallEnded    = "ended"
	CallFailed   = "failed"
)

// ErrMergedCall is returned when a call with the same Call-ID and From
// tag is still being set up or running: the request is a duplicate.
var ErrMergedCall = errors.New("a call with this Call-ID and From tag is already live")

// CallIdentity names a call: its work ref and its dialog's identity.
type CallIdentity struct {
	Ref      string
	CallID   string
	FromTag  string
	FromURI  string
	ToURI    string
	Instance string // the call manager instance that set it up
}

// CallTarget is where a call was placed; NodeID 0 means no eligible node
// had room.
type CallTarget struct {
	WorkID   int64
	Epoch    int64
	NodeID   int64
	NodeName string
	Address  string
	// Merged is set by PlaceCalls for a call whose Call-ID and From tag
	// are live already (ErrMergedCall from PlaceSIPCall).
	Merged bool
}

// CallRoute is what an in-dialog request needs: whose tag set the call up
// and which node runs it now.
type CallRoute struct {
	Ref         string
	FromTag     string
	State       string
	WorkState   string
	NodeName    string
	NodeAddress string
}

// Live reports whether the call is still set up or running.
func (r CallRoute) Live() bool { return r.State == CallSetup || r.State == CallAnswered }

// CallAnswer is a call that got its 2xx, with the callee's tag.
type CallAnswer struct {
	Ref   string
	ToTag string
	At    time.Time
}

// PlaceSIPCall places one call (a failover try, or a call whose ref
// exists already) on the media node Plan picks outside exclude, and
// records it: the eligible nodes are locked, planned over, and the call
// written in one statement. retry marks a failover try of the same call.
// NodeID 0 in the answer means no eligible node had room.
func (s *Service) PlaceSIPCall(ctx context.Context, id CallIdentity, exclude []int64, retry bool) (CallTarget, error) {
	var t CallTarget
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		t = CallTarget{}
		cands, err := s.q.SipMediaLockEligible(ctx, tx)
		if err != nil {
			return err
		}
		to := Plan([]PlanItem{{Cost: 1, Exclude: exclude}}, mediaCandidates(cands))[0]
		if to == 0 {
			return nil
		}
		row, err := s.q.SipCallPlaceOn(ctx, tx, dbsqlc.SipCallPlaceOnParams{
			Ref: id.Ref, NodeID: to, CallID: id.CallID, FromTag: id.FromTag, FromUri: id.FromURI, ToUri: id.ToURI,
			Instance: id.Instance, Retry: retry,
		})
		if err != nil {
			return err
		}
		if row.Duplicate || row.WorkID == 0 {
			// A live call holds the ref: nothing was written (a
			// duplicate racing us rolls the node's count back with us).
			t.Merged = true
			return errMerged
		}
		t = CallTarget{WorkID: row.WorkID, Epoch: row.Epoch, NodeID: row.NodeID, NodeName: row.NodeName, Address: row.NodeAddress}
		return nil
	})
	if errors.Is(err, errMerged) {
		return CallTarget{}, fmt.Errorf("place call %s: %w", id.Ref, ErrMergedCall)
	}
	if err != nil {
		return CallTarget{}, fmt.Errorf("place call %s: %w", id.Ref, err)
	}
	if t.NodeID != 0 {
		countPlaced(callKind, WorkAssigned, causeSIP, 1)
	}
	return t, nil
}

// callKind is the work kind of SIP calls; causeSIP is the cause their
// placements are counted under in the metrics.
const (
	callKind = "call"
	causeSIP = "sip"
)

// errMerged rolls back a placement that met a live call with its ref.
var errMerged = errors.New("merged call")

// mediaCandidates turns locked media nodes into the planner's candidates.
func mediaCandidates(rows []dbsqlc.SipMediaLockEligibleRow) []Candidate {
	out := make([]Candidate, len(rows))
	for i, r := range rows {
		out[i] = Candidate{ID: r.ID, Name: r.Name, Capacity: r.Capacity, Used: r.Used, Weight: r.Weight}
	}
	return out
}

// FailoverCall ends the placement of a try that failed and notes its
// cause. It returns the node the work was on (0 if none).
func (s *Service) FailoverCall(ctx context.Context, ref, cause string) (int64, error) {
	var row dbsqlc.SipCallFailoverRow
	err := retryStatement(ctx, func() error {
		var err error
		row, err = s.q.SipCallFailover(ctx, s.pool, dbsqlc.SipCallFailoverParams{Ref: ref, Cause: cause})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("fail over call %s: %w", ref, err)
	}
	return row.NodeID, nil
}

// EndCall ends a call and its work: state is CallEnded or CallFailed.
// With record, a call that never got a row (refused before any node was
// tried) is recorded. It returns the node whose load dropped (0 if none)
// and whether this call ended now (false: it had ended already).
func (s *Service) EndCall(ctx context.Context, id CallIdentity, state, cause string, record bool) (int64, bool, error) {
	p := dbsqlc.SipCallEndParams{
		Ref: id.Ref, State: state, Cause: cause, CallID: id.CallID, FromTag: id.FromTag,
		FromUri: id.FromURI, ToUri: id.ToURI, Instance: id.Instance, Record: record,
	}
	var row dbsqlc.SipCallEndRow
	err := retryStatement(ctx, func() error {
		var err error
		row, err = s.q.SipCallEnd(ctx, s.pool, p)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("end call %s: %w", id.Ref, err)
	}
	return row.NodeID, row.Ended > 0, nil
}

// LookupCall finds the call an in-dialog request belongs to by the refs
// its tags derive. A call not found is ErrNotFound.
func (s *Service) LookupCall(ctx context.Context, callID string, refs []string) (CallRoute, error) {
	row, err := s.q.SipCallLookup(ctx, s.pool, dbsqlc.SipCallLookupParams{Refs: refs, CallID: callID})
	if err != nil {
		return CallRoute{}, db.Translate(err)
	}
	return CallRoute{Ref: row.Ref, FromTag: row.FromTag, State: row.State, WorkState: row.WorkState,
		NodeName: row.NodeName, NodeAddress: row.NodeAddress}, nil
}

// ExpireCalls ends the calls older than maxAge (they never saw a BYE) and
// returns how many ended.
func (s *Service) ExpireCalls(ctx context.Context, maxAge time.Duration) (int, error) {
	var touched []int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		ids, err := s.q.SipCallsExpire(ctx, tx, maxAge.Seconds())
		if err != nil {
			return err
		}
		touched = touched[:0]
		for _, id := range ids {
			if id != 0 {
				touched = append(touched, id)
			}
		}
		if len(touched) == 0 {
			return nil
		}
		if err := s.q.NodeRecountUsed(ctx, tx, touched); err != nil {
			return err
		}
		return s.event(ctx, tx, nil, "call", "warning", "sip-front-door",
			fmt.Sprintf("Calls on %d media node(s) ended at the maximum call duration (%s) without a BYE", len(touched), maxAge))
	})
	if err != nil {
		return 0, fmt.Errorf("expire calls: %w", err)
	}
	s.notifyCommitted(ctx, touched...)
	return len(touched), nil
}

// PruneCalls forgets calls that ended more than a day ago.
func (s *Service) PruneCalls(ctx context.Context) (int64, error) {
	return s.q.SipCallPrune(ctx, s.pool)
}

// CallNodeTimedOut counts a node that let a call setup time out as a
// failed probe.
func (s *Service) CallNodeTimedOut(ctx context.Context, nodeID int64, took time.Duration, detail string) error {
	return retryStatement(ctx, func() error {
		return s.q.SipNodeTimedOut(ctx, s.pool, dbsqlc.SipNodeTimedOutParams{NodeID: nodeID, LatencyUs: took.Microseconds(), Detail: detail})
	})
}

// NotifyNodes wakes the assignment long-polls of nodes whose calls changed
// in committed statements, with one notification for all of them.
func (s *Service) NotifyNodes(ctx context.Context, nodeIDs ...int64) {
	s.notifyCommitted(ctx, nodeIDs...)
}

// CallSettings returns the stored sip_* settings.
func (s *Service) CallSettings(ctx context.Context) (map[string]string, error) {
	rows, err := s.q.SipSettings(ctx, s.pool)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		out[r.Key] = r.Value
	}
	return out, nil
}

// CallStats is what the portal's Calls view shows.
type CallStats struct {
	Nodes    []dbsqlc.SipCallLiveByNodeRow
	Recent   dbsqlc.SipCallRecentRow // over the last minute
	Causes   []dbsqlc.SipCallFailureCausesRow
	Window   time.Duration // of Causes
	RateSpan time.Duration // of Recent
}

// CallStats reads the live calls per media node, the recent call rate and
// the failure causes of the last window.
func (s *Service) CallStats(ctx context.Context, window time.Duration) (CallStats, error) {
	st := CallStats{Window: window, RateSpan: time.Minute}
	var err error
	if st.Nodes, err = s.q.SipCallLiveByNode(ctx, s.pool); err != nil {
		return st, err
	}
	if st.Recent, err = s.q.SipCallRecent(ctx, s.pool, st.RateSpan.Seconds()); err != nil {
		return st, err
	}
	st.Causes, err = s.q.SipCallFailureCauses(ctx, s.pool, window.Seconds())
	return st, err
}

// retryStatement runs a single-statement write again when Postgres broke
// a deadlock or serialization conflict by rolling it back.
func retryStatement(ctx context.Context, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err != nil && attempt < 5 && db.Retryable(err) && ctx.Err() == nil {
			continue
		}
		return err
	}
}

// CallBatch is what the SIP front door writes in one transaction: the
// calls answered, the calls ended and the first tries of new calls that
// arrived since its last commit.
type CallBatch struct {
	Answers []CallAnswer
	Ends    []CallEnd
	Places  []CallIdentity
}

// CallEnd is one call to end in a batch. Answer, when set, is the call's
// answer, written with its end.
type CallEnd struct {
	Ref    string
	State  string
	Cause  string
	Answer *CallAnswer
}

// CallBatchResult is what a committed CallBatch did: where each call of
// Places went (in order; NodeID 0: no node had room; Merged: a live call
// holds its Call-ID and From tag), the error of a call placed on its own
// after the commit that failed (in order, nil when placed), and the nodes
// whose calls changed.
type CallBatchResult struct {
	Targets []CallTarget
	Errs    []error
	Touched []int64
}

// CommitCalls writes a CallBatch in one transaction, so that the front
// door's writes cost one commit (one WAL flush) per batch whatever their
// mix, and its writers never wait on each other's node locks. The
// eligible media nodes are locked once; the answers are marked, then the
// ends written (their nodes' load drops, which the planner sees), then
// the new calls planned by Plan over the locked nodes and written by one
// statement. A new call whose ref exists already (an INVITE sent again
// after a challenge, or a merged request) is placed after the commit on
// its own with PlaceSIPCall.
func (s *Service) CommitCalls(ctx context.Context, b CallBatch, instance string) (CallBatchResult, error) {
	var res CallBatchResult
	var again []int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		res = CallBatchResult{Targets: make([]CallTarget, len(b.Places)), Errs: make([]error, len(b.Places))}
		again = again[:0]
		var cands []dbsqlc.SipMediaLockEligibleRow
		if len(b.Places) > 0 {
			// Locked first, in id order, as every multi-node writer does.
			var err error
			if cands, err = s.q.SipMediaLockEligible(ctx, tx); err != nil {
				return err
			}
		}
		if len(b.Answers) > 0 {
			p := dbsqlc.SipCallAnsweredParams{
				Refs: make([]string, len(b.Answers)), ToTags: make([]string, len(b.Answers)), Ats: make([]time.Time, len(b.Answers)),
			}
			for i, a := range b.Answers {
				p.Refs[i], p.ToTags[i], p.Ats[i] = a.Ref, a.ToTag, a.At
			}
			if err := s.q.SipCallAnswered(ctx, tx, p); err != nil {
				return err
			}
		}
		if len(b.Ends) > 0 {
			n := len(b.Ends)
			p := dbsqlc.SipCallEndBatchParams{Refs: make([]string, n), States: make([]string, n), Causes: make([]string, n),
				Answered: make([]bool, n), AnsweredAts: make([]time.Time, n), ToTags: make([]string, n)}
			for i, e := range b.Ends {
				p.Refs[i], p.States[i], p.Causes[i] = e.Ref, e.State, e.Cause
				p.AnsweredAts[i] = time.Now()
				if a := e.Answer; a != nil {
					p.Answered[i], p.AnsweredAts[i], p.ToTags[i] = true, a.At, a.ToTag
				}
			}
			freed, err := s.q.SipCallEndBatch(ctx, tx, p)
			if err != nil {
				return err
			}
			for _, f := range freed {
				res.Touched = append(res.Touched, f.NodeID)
				for i := range cands {
					if cands[i].ID == f.NodeID {
						cands[i].Used = max(cands[i].Used-int32(f.Freed), 0)
					}
				}
			}
		}
		if len(b.Places) == 0 {
			return nil
		}
		items := make([]PlanItem, len(b.Places))
		for i := range items {
			items[i] = PlanItem{Cost: 1}
		}
		plan := Plan(items, mediaCandidates(cands))
		p := dbsqlc.SipCallPlaceBatchParams{Instance: instance}
		for i, id := range b.Places {
			if plan[i] == 0 {
				continue
			}
			p.Refs = append(p.Refs, id.Ref)
			p.NodeIds = append(p.NodeIds, plan[i])
			p.CallIds = append(p.CallIds, id.CallID)
			p.FromTags = append(p.FromTags, id.FromTag)
			p.FromUris = append(p.FromUris, id.FromURI)
			p.ToUris = append(p.ToUris, id.ToURI)
		}
		if len(p.Refs) == 0 {
			return nil
		}
		rows, err := s.q.SipCallPlaceBatch(ctx, tx, p)
		if err != nil {
			return err
		}
		placed := make(map[string]dbsqlc.SipCallPlaceBatchRow, len(rows))
		for _, r := range rows {
			placed[r.Ref] = r
		}
		byID := make(map[int64]dbsqlc.SipMediaLockEligibleRow, len(cands))
		for _, c := range cands {
			byID[c.ID] = c
		}
		for i, id := range b.Places {
			if plan[i] == 0 {
				continue
			}
			r, ok := placed[id.Ref]
			if !ok {
				again = append(again, i)
				continue
			}
			delete(placed, id.Ref) // a ref twice in one batch: the second goes again
			n := byID[r.NodeID]
			res.Targets[i] = CallTarget{WorkID: r.ID, Epoch: r.Epoch, NodeID: r.NodeID, NodeName: n.Name, Address: n.Address}
			res.Touched = append(res.Touched, r.NodeID)
		}
		return nil
	})
	if err != nil {
		return CallBatchResult{}, fmt.Errorf("write %d answered, %d ended and %d new calls: %w", len(b.Answers), len(b.Ends), len(b.Places), err)
	}
	placed := 0
	for _, t := range res.Targets {
		if t.NodeID != 0 {
			placed++
		}
	}
	countPlaced(callKind, WorkAssigned, causeSIP, placed)
	for _, i := range again {
		t, err := s.PlaceSIPCall(ctx, b.Places[i], nil, false)
		switch {
		case errors.Is(err, ErrMergedCall):
			res.Targets[i] = CallTarget{Merged: true}
		case err != nil:
			res.Errs[i] = err
		default:
			res.Targets[i] = t
			res.Touched = append(res.Touched, t.NodeID)
		}
	}
	return res, nil
}
