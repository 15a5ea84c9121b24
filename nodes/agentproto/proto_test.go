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
	if got, want := Prefix+PollPath(7, 30*time.Second), "/api/v1/assignments?since=7&wait=30s"; got != want {
		t.Errorf("PollPath = %s, want %s", got, want)
	}
}
