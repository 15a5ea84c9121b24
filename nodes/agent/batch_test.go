package agent

import (
	"github.com/callplane/callplane/nodes/agentproto"
	"slices"
	"strings"
	"testing"
)

func (cm *callManager) batchStats() (calls, items, acks int) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return cm.batchCalls, cm.batchItems, len(cm.acks)
}

// pollAckCount is how many acks came on polls.
func (cm *callManager) pollAckCount() int {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return cm.pollAckItems
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
	set := []agentproto.Assignment{
		{ID: 60, Ref: "call-60", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
		{ID: 61, Ref: "call-61", Kind: "call", Cost: 1, Epoch: 2, State: agentproto.StateAssigned},
		{ID: 62, Ref: "bad", Kind: "call", Cost: 1, Epoch: 3, State: agentproto.StateAssigned},
		{ID: 63, Ref: "call-moved", Kind: "call", Cost: 1, Epoch: 4, State: agentproto.StateAssigned},
		{ID: 64, Ref: "call-64", Kind: "call", Cost: 2, Epoch: 1, State: agentproto.StateAssigned},
	}
	e.cm.setDesired(set...)
	eventually(t, "stale assignment stopped", func() bool {
		return slices.Contains(e.hookLines(t), "stop id=63 ref=call-moved kind=call cost=1 epoch=4 node=media-1")
	})
	e.waitRunning(t, 4, agentproto.Running{ID: 60, Epoch: 1}, agentproto.Running{ID: 61, Epoch: 2}, agentproto.Running{ID: 64, Epoch: 1})
	calls, items, acks := e.cm.batchStats()
	if calls != 1 || items != 5 || acks != 5 {
		t.Fatalf("batch requests %d carrying %d acks, %d acks in all; want 1, 5, 5", calls, items, acks)
	}
	_, _, got, _ := e.cm.snapshot()
	slices.SortFunc(got, func(x, y ackRecord) int { return int(x.ID - y.ID) })
	want := []ackRecord{{60, agentproto.StateActive, 1}, {61, agentproto.StateActive, 2}, {62, agentproto.StateFailed, 3}, {63, agentproto.StateActive, 4}, {64, agentproto.StateActive, 1}}
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
		agentproto.Assignment{ID: 70, Ref: "call-70", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
		agentproto.Assignment{ID: 71, Ref: "call-71", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
		agentproto.Assignment{ID: 72, Ref: "call-72", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
	)
	eventually(t, "three single acks", func() bool { _, _, acks := e.cm.batchStats(); return acks == 3 })
	e.waitRunning(t, 3, agentproto.Running{ID: 70, Epoch: 1}, agentproto.Running{ID: 71, Epoch: 1}, agentproto.Running{ID: 72, Epoch: 1})
	e.cm.setDesired(
		agentproto.Assignment{ID: 70, Ref: "call-70", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateActive},
		agentproto.Assignment{ID: 73, Ref: "call-73", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
		agentproto.Assignment{ID: 74, Ref: "call-74", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
	)
	eventually(t, "two more single acks", func() bool { _, _, acks := e.cm.batchStats(); return acks == 5 })
	if calls, items, _ := e.cm.batchStats(); calls != 1 || items != 0 {
		t.Fatalf("batch API asked %d times (%d acks) of a server without it; want once, 0", calls, items)
	}
	if !strings.Contains(e.logs.String(), "server has no batch ack API") {
		t.Errorf("fallback not logged:\n%s", e.logs.String())
	}
}

// The acks a delivery owes ride the next poll, answered with its results:
// no ack request of their own. A failed hook goes as failed, and a stale
// epoch in the results drops that assignment as a 409 to its own ack would.
// (The stand-in answers a stream with one set, as a call manager older
// than streams does: the agent long-polls from then on.)
func TestRunAcksRideTheNextPoll(t *testing.T) {
	e := setup(t, nil)
	e.cm.mu.Lock()
	e.cm.batchAck, e.cm.pollAcks = true, true
	e.cm.ackStatus[73] = 409
	e.cm.mu.Unlock()
	e.cm.setDesired(
		agentproto.Assignment{ID: 70, Ref: "call-70", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
		agentproto.Assignment{ID: 72, Ref: "bad", Kind: "call", Cost: 1, Epoch: 3, State: agentproto.StateAssigned},
		agentproto.Assignment{ID: 73, Ref: "call-moved", Kind: "call", Cost: 1, Epoch: 4, State: agentproto.StateAssigned},
	)
	eventually(t, "stale assignment stopped", func() bool {
		return slices.Contains(e.hookLines(t), "stop id=73 ref=call-moved kind=call cost=1 epoch=4 node=media-1")
	})
	e.waitRunning(t, 1, agentproto.Running{ID: 70, Epoch: 1})
	batches, _, acks := e.cm.batchStats()
	if items := e.cm.pollAckCount(); items != 3 || batches != 0 || acks != 3 {
		t.Fatalf("%d acks on polls, %d batch requests, %d acks in all; want 3, 0, 3", items, batches, acks)
	}
	if e.cm.ackError(72) == "" {
		t.Fatal("the failed start's reason did not ride the poll")
	}
	if !strings.Contains(e.logs.String(), "server does not stream deliveries; long-polling") {
		t.Fatalf("the agent did not say it fell back to the long-poll:\n%s", e.logs)
	}
	// The server now has 70 active: a later delivery owes nothing.
	e.cm.setDesired(
		agentproto.Assignment{ID: 70, Ref: "call-70", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateActive},
		agentproto.Assignment{ID: 74, Ref: "call-74", Kind: "call", Cost: 1, Epoch: 1, State: agentproto.StateAssigned},
	)
	eventually(t, "the new item acked on a poll", func() bool { return e.cm.pollAckCount() == 4 })
	if batches, _, acks := e.cm.batchStats(); batches != 0 || acks != 4 {
		t.Fatalf("after the second delivery: %d batch requests, %d acks; want 0, 4", batches, acks)
	}
}
