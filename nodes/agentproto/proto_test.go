package agentproto

import (
	"encoding/json"
	"testing"
	"time"
)

// TestWireFormat pins the JSON the agent API exchanges (DESIGN.md, "Agent
// API"): a heartbeat that does not report its running set leaves the field
// out, one that reports nothing running sends an empty list, and the
// server tells the two apart.
func TestWireFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"heartbeat without running set", HeartbeatRequest{Load: 2, Version: "1.0"}, `{"load":2,"version":"1.0"}`},
		{"heartbeat, nothing running", HeartbeatRequest{Version: "1.0", Running: []Running{}}, `{"load":0,"version":"1.0","running":[]}`},
		{"heartbeat, running", HeartbeatRequest{Load: 1, Running: []Running{{ID: 7, Epoch: 3}}}, `{"load":1,"version":"","running":[{"id":7,"epoch":3}]}`},
		{"heartbeat answer", HeartbeatResponse{AdminState: "enabled", HeartbeatIntervalMS: 1000}, `{"admin_state":"enabled","heartbeat_interval_ms":1000}`},
		{"single ack", AckRequest{State: StateActive, Epoch: 4}, `{"state":"active","epoch":4}`},
		{"failed ack", AckRequest{State: StateFailed, Epoch: 4, Error: "hook failed"}, `{"state":"failed","epoch":4,"error":"hook failed"}`},
		{"batch ack", AckBatchRequest{Acks: []Ack{{ID: 1, Epoch: 2, State: StateActive}}}, `{"acks":[{"id":1,"epoch":2,"state":"active"}]}`},
		{"batch ack answer", AckBatchResponse{Results: []AckResult{{ID: 1, OK: true}, {ID: 2, Error: "stale epoch", Status: 409}}},
			`{"results":[{"id":1,"ok":true},{"id":2,"error":"stale epoch","status":409}]}`},
		{"desired set", DesiredSet{Version: 9, Assignments: []Assignment{{ID: 1, Ref: "c", Kind: "call", Cost: 1, Epoch: 2, State: StateAssigned}}},
			`{"version":9,"assignments":[{"id":1,"ref":"c","kind":"call","cost":1,"epoch":2,"state":"assigned"}]}`},
		{"delta", DesiredSet{Version: 10, Delta: true, Assignments: []Assignment{{ID: 2, Ref: "d", Kind: "call", Cost: 1, Epoch: 1, State: StateAssigned}}, Removed: []int64{1}},
			`{"version":10,"assignments":[{"id":2,"ref":"d","kind":"call","cost":1,"epoch":1,"state":"assigned"}],"delta":true,"removed":[1]}`},
		{"enrolment answer", EnrollResponse{NodeID: 3, NodeName: "m1", Kind: "media", Credential: "cpn_x", HeartbeatIntervalMS: 1000},
			`{"node_id":3,"node_name":"m1","kind":"media","credential":"cpn_x","heartbeat_interval_ms":1000}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, b, tt.want)
		}
	}
	for body, reported := range map[string]bool{`{"load":1}`: false, `{"running":null}`: false, `{"running":[]}`: true} {
		var hb HeartbeatRequest
		if err := json.Unmarshal([]byte(body), &hb); err != nil {
			t.Fatal(err)
		}
		if got := hb.Running != nil; got != reported {
			t.Errorf("%s: running set reported = %v, want %v", body, got, reported)
		}
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	if got, want := Prefix+AckPath(42), "/api/v1/assignments/42/ack"; got != want {
		t.Errorf("AckPath = %s, want %s", got, want)
	}
	for _, tt := range []struct {
		since int64
		delta bool
		want  string
	}{
		{7, false, "/api/v1/assignments?since=7&wait=30s"},
		{7, true, "/api/v1/assignments?since=7&wait=30s&delta=1"},
		{0, true, "/api/v1/assignments?since=0&wait=30s"}, // nothing to take a delta from
	} {
		if got := Prefix + PollPath(tt.since, 30*time.Second, tt.delta); got != tt.want {
			t.Errorf("PollPath(%d, delta %v) = %s, want %s", tt.since, tt.delta, got, tt.want)
		}
	}
}

// Apply merges deltas into the held set and replaces it with a whole set.
func TestApply(t *testing.T) {
	t.Parallel()
	a := func(id, epoch int64) Assignment { return Assignment{ID: id, Epoch: epoch} }
	held := DesiredSet{Version: 1, Assignments: []Assignment{a(1, 1), a(2, 1)}}.Apply(nil)
	held = DesiredSet{Version: 2, Delta: true, Assignments: []Assignment{a(2, 2), a(3, 1)}, Removed: []int64{1}}.Apply(held)
	if len(held) != 2 || held[2].Epoch != 2 || held[3].Epoch != 1 {
		t.Fatalf("after a delta: %v", held)
	}
	held = DesiredSet{Version: 3, Assignments: []Assignment{a(4, 1)}}.Apply(held)
	if len(held) != 1 || held[4].ID != 4 {
		t.Fatalf("a whole set must replace what was held: %v", held)
	}
}
