package agent

import (
	"slices"
	"strings"
	"testing"
)

func (cm *callManager) batchStats() (calls, items, acks int) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return cm.batchCalls, cm.batchItems, len(cm.acks)
}

// A delivery that starts several assignments is acked with one batch
// request: active for the started ones, failed for a failed hook; a stale
// epoch in the answer drops that assignment as a single 409 would.
func TestRunAcksStartsInOneBatch(t *testing.T) {
	e := setup(t, nil)
	e.cm.mu.Lock()
	e.cm.batchAck = true
	e.cm.ackStatus[63] = 409
	e.cm.mu.Unlock()
	set := []assignment{
		{ID: 60, Ref: "call-60", Kind: "call", Cost: 1, Epoch: 1, State: stateAssigned},
		{ID: 61, Ref: "call-61", Kind: "call", Cost: 1, Epoch: 2, State: stateAssigned},
		{ID: 62, Ref: "bad", Kind: "call", Cost: 1, Epoch: 3, State: stateAssigned},
		{ID: 63, Ref: "call-moved", Kind: "call", Cost: 1, Epoch: 4, State: stateAssigned},
		{ID: 64, Ref: "call-64", Kind: "call", Cost: 2, Epoch: 1, State: stateAssigned},
	}
	e.cm.setDesired(set...)
	eventually(t, "stale assignment stopped", func() bool {
		return slices.Contains(e.hookLines(t), "stop id=63 ref=call-moved kind=call cost=1 epoch=4 node=media-1")
	})
	e.waitRunning(t, 4, runningRef{60, 1}, runningRef{61, 2}, runningRef{64, 1})
	calls, items, acks := e.cm.batchStats()
	if calls != 1 || items != 5 || acks != 5 {
		t.Fatalf("batch requests %d carrying %d acks, %d acks in all; want 1, 5, 5", calls, items, acks)
	}
	_, _, got, _ := e.cm.snapshot()
	slices.SortFunc(got, func(x, y ackRecord) int { return int(x.ID - y.ID) })
	want := []ackRecord{{60, stateActive, 1}, {61, stateActive, 2}, {62, stateFailed, 3}, {63, stateActive, 4}, {64, stateActive, 1}}
	if !slices.Equal(got, want) {
		t.Fatalf("acks = %+v, want %+v", got, want)
	}
	// The acked ones are not acked again on a duplicate delivery, and the
	// stale and failed ones are not started again.
	e.cm.setDesired(set...)
	e.waitPolls(t, 2)
	if calls, _, acks := e.cm.batchStats(); calls != 1 || acks != 5 {
		t.Fatalf("duplicate delivery acked again: %d batch requests, %d acks", calls, acks)
	}
	starts := 0
	for _, l := range e.hookLines(t) {
		if strings.HasPrefix(l, "start ") {
			starts++
		}
	}
	// The failing one is tried DefaultHookAttempts times.
	if want := 4 + DefaultHookAttempts; starts != want {
		t.Fatalf("start hooks ran %d times, want %d: %q", starts, want, e.hookLines(t))
	}
}

// A server without the batch API (404) gets the acks one by one, and is
// not asked for the batch API again on the next delivery.
func TestRunFallsBackToSingleAcks(t *testing.T) {
	e := setup(t, nil)
	e.cm.setDesired(
		assignment{ID: 70, Ref: "call-70", Kind: "call", Cost: 1, Epoch: 1, State: stateAssigned},
		assignment{ID: 71, Ref: "call-71", Kind: "call", Cost: 1, Epoch: 1, State: stateAssigned},
		assignment{ID: 72, Ref: "call-72", Kind: "call", Cost: 1, Epoch: 1, State: stateAssigned},
	)
	eventually(t, "three single acks", func() bool { _, _, acks := e.cm.batchStats(); return acks == 3 })
	e.waitRunning(t, 3, runningRef{70, 1}, runningRef{71, 1}, runningRef{72, 1})
	e.cm.setDesired(
		assignment{ID: 70, Ref: "call-70", Kind: "call", Cost: 1, Epoch: 1, State: stateActive},
		assignment{ID: 73, Ref: "call-73", Kind: "call", Cost: 1, Epoch: 1, State: stateAssigned},
		assignment{ID: 74, Ref: "call-74", Kind: "call", Cost: 1, Epoch: 1, State: stateAssigned},
	)
	eventually(t, "two more single acks", func() bool { _, _, acks := e.cm.batchStats(); return acks == 5 })
	if calls, items, _ := e.cm.batchStats(); calls != 1 || items != 0 {
		t.Fatalf("batch API asked %d times (%d acks) of a server without it; want once, 0", calls, items)
	}
	if !strings.Contains(e.logs.String(), "server has no batch ack API") {
		t.Errorf("fallback not logged:\n%s", e.logs.String())
	}
}
