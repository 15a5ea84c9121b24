package nodes_test

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server/metrics"
)

func counterValue(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func callID(ref string) nodes.CallIdentity {
	return nodes.CallIdentity{Ref: ref, CallID: ref + "@test", FromTag: "t-" + ref, FromURI: "sip:a@test", ToURI: "sip:b@test", Instance: "i1"}
}

func (e *env) commitCalls(b nodes.CallBatch) nodes.CallBatchResult {
	e.t.Helper()
	res, err := e.svc.CommitCalls(e.ctx, b, "i1")
	if err != nil {
		e.t.Fatalf("commit calls: %v", err)
	}
	return res
}

// usedMatchesWork checks that every media node's used count is its live
// call work, the invariant a double end would break.
func (e *env) usedMatchesWork() {
	e.t.Helper()
	if n := e.count(`SELECT count(*) FROM nodes n WHERE kind = 'media' AND used <> (SELECT count(*) FROM work w
		WHERE w.node_id = n.id AND w.state IN ('assigned', 'active'))`); n != 0 {
		e.t.Fatalf("%d media nodes whose used count is not their live work", n)
	}
	e.digestsHold("the front door's calls")
}

// The front door's batches: ends sent twice (in one batch and in later
// ones) end each call's work once; an answer written with the end is
// kept; new calls in the same batch are placed.
func TestCommitCallsEndsEachCallOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 10, 100)
	e.node("m2", nodes.KindMedia, 10, 100)

	sipPlaced := metrics.Placements.WithLabelValues("call", "placed", "sip")
	placedBefore := counterValue(t, sipPlaced)
	res := e.commitCalls(nodes.CallBatch{Places: []nodes.CallIdentity{callID("sip:a"), callID("sip:b"), callID("sip:c"), callID("sip:d")}})
	for i, tg := range res.Targets {
		if tg.NodeID == 0 || tg.Merged || res.Errs[i] != nil {
			t.Fatalf("call %d not placed: %+v %v", i, tg, res.Errs[i])
		}
	}
	if n := e.count("SELECT sum(used) FROM nodes WHERE kind = 'media'"); n != 4 {
		t.Fatalf("used = %d after 4 calls, want 4", n)
	}

	at := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	e.commitCalls(nodes.CallBatch{
		Answers: []nodes.CallAnswer{{Ref: "sip:c", ToTag: "callee-c", At: at}},
		Ends: []nodes.CallEnd{
			{Ref: "sip:a", State: nodes.CallEnded, Cause: "bye", Answer: &nodes.CallAnswer{Ref: "sip:a", ToTag: "callee-a", At: at}},
			{Ref: "sip:b", State: nodes.CallEnded, Cause: "bye"},
			{Ref: "sip:b", State: nodes.CallEnded, Cause: "bye"}, // the same end twice in one batch
		},
		Places: []nodes.CallIdentity{callID("sip:e")},
	})
	if n := e.count("SELECT sum(used) FROM nodes WHERE kind = 'media'"); n != 3 {
		t.Fatalf("used = %d after 2 ends and 1 new call, want 3", n)
	}
	e.usedMatchesWork()
	// Other tests may place SIP calls at the same time: at least these 5.
	if v := counterValue(t, sipPlaced) - placedBefore; v < 5 {
		t.Fatalf("callplane_placements_total{kind=call,outcome=placed,cause=sip} grew by %v, want at least 5", v)
	}
	// Later copies of the same ends change nothing.
	for range 2 {
		e.commitCalls(nodes.CallBatch{Ends: []nodes.CallEnd{
			{Ref: "sip:a", State: nodes.CallEnded, Cause: "bye"}, {Ref: "sip:b", State: nodes.CallFailed, Cause: "late"},
		}})
	}
	if n := e.count("SELECT sum(used) FROM nodes WHERE kind = 'media'"); n != 3 {
		t.Fatalf("used = %d after ends sent again, want 3", n)
	}
	e.usedMatchesWork()
	for _, ref := range []string{"sip:a", "sip:b"} {
		if n := e.count("SELECT count(*) FROM work_history h JOIN work w ON w.id = h.work_id WHERE w.ref = $1 AND h.state = 'ended'", ref); n != 1 {
			t.Fatalf("%s ended %d times in its history, want once", ref, n)
		}
		if n := e.count("SELECT count(*) FROM sip_calls WHERE ref = $1 AND state = 'ended' AND cause = 'bye'", ref); n != 1 {
			t.Fatalf("%s: call row not ended by its first end", ref)
		}
	}
	// The answer that went with a's end, and c's on its own.
	if n := e.count("SELECT count(*) FROM sip_calls WHERE ref = 'sip:a' AND to_tag = 'callee-a' AND answered_at = $1", at); n != 1 {
		t.Fatal("the answer written with a's end is missing")
	}
	if n := e.count("SELECT count(*) FROM sip_calls WHERE ref = 'sip:c' AND state = 'answered' AND to_tag = 'callee-c'"); n != 1 {
		t.Fatal("c is not marked answered")
	}
}

// Capacity freed by the ends of a batch is there for the new calls of the
// same batch: the planner sees the loads after the ends.
func TestCommitCallsPlacesIntoCapacityFreedInTheSameBatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 1, 100)
	e.node("m2", nodes.KindMedia, 1, 100)
	res := e.commitCalls(nodes.CallBatch{Places: []nodes.CallIdentity{callID("sip:a"), callID("sip:b"), callID("sip:full")}})
	if res.Targets[0].NodeID == 0 || res.Targets[1].NodeID == 0 || res.Targets[2].NodeID != 0 {
		t.Fatalf("targets %+v: want two placed and the third refused (full)", res.Targets)
	}
	res = e.commitCalls(nodes.CallBatch{
		Ends:   []nodes.CallEnd{{Ref: "sip:a", State: nodes.CallEnded, Cause: "bye"}},
		Places: []nodes.CallIdentity{callID("sip:c")},
	})
	if res.Targets[0].NodeID == 0 {
		t.Fatal("the new call was refused though the end in its batch freed a place")
	}
	if n := e.count("SELECT sum(used) FROM nodes WHERE kind = 'media'"); n != 2 {
		t.Fatalf("used = %d, want 2", n)
	}
	e.usedMatchesWork()
}
