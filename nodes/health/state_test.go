package health

import (
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

func TestStep(t *testing.T) {
	t.Parallel()
	th := Thresholds{Fail: 3, Recover: 2}
	const (
		pending = nodes.HealthPending
		up      = nodes.HealthUp
		suspect = nodes.HealthSuspect
		down    = nodes.HealthDown
	)
	tests := []struct {
		name string
		cur  State
		ok   bool
		held bool
		th   Thresholds
		want State
	}{
		{"pending first success stays pending", State{pending, 0, 0}, true, false, th, State{pending, 0, 1}},
		{"pending M successes up", State{pending, 0, 1}, true, false, th, State{up, 0, 2}},
		{"pending failures stay pending", State{pending, 5, 0}, false, false, th, State{pending, 6, 0}},
		{"up success stays up", State{up, 0, 9}, true, false, th, State{up, 0, 10}},
		{"up first failure suspect", State{up, 0, 9}, false, false, th, State{suspect, 1, 0}},
		{"up N=1 goes down at once", State{up, 0, 9}, false, false, Thresholds{Fail: 1, Recover: 1}, State{down, 1, 0}},
		{"suspect below N", State{suspect, 1, 0}, false, false, th, State{suspect, 2, 0}},
		{"suspect at N down", State{suspect, 2, 0}, false, false, th, State{down, 3, 0}},
		{"suspect success up", State{suspect, 2, 0}, true, false, th, State{up, 0, 1}},
		{"down failure stays down", State{down, 3, 0}, false, false, th, State{down, 4, 0}},
		{"down one success stays down", State{down, 4, 0}, true, false, th, State{down, 0, 1}},
		{"down M successes up", State{down, 0, 1}, true, false, th, State{up, 0, 2}},
		{"held down does not recover", State{down, 0, 5}, true, true, th, State{down, 0, 6}},
		{"held suspect is held down", State{suspect, 1, 0}, true, true, th, State{down, 0, 1}},
		{"held up node may fail", State{up, 0, 3}, false, true, th, State{suspect, 1, 0}},
		{"held pending may come up", State{pending, 0, 1}, true, true, th, State{up, 0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Step(tt.cur, tt.ok, tt.th, tt.held); got != tt.want {
				t.Errorf("Step(%+v, ok=%v, held=%v) = %+v; want %+v", tt.cur, tt.ok, tt.held, got, tt.want)
			}
		})
	}
}

// TestDefaultDetection checks the built-in timing detects a dead node
// within 3 s: N failed rounds, the first starting up to one interval after the
// death, each taking up to the timeout.
func TestDefaultDetection(t *testing.T) {
	t.Parallel()
	s := settings.Builtin()
	worst := s.ProbeInterval + time.Duration(s.FailThreshold-1)*s.ProbeInterval + s.ProbeTimeout
	best := time.Duration(s.FailThreshold-1)*s.ProbeInterval + s.ProbeTimeout
	if best < 1500*time.Millisecond || worst > 3*time.Second {
		t.Fatalf("default detection between %s and %s; want within 3 s and not so quick that one lost packet fails a node", best, worst)
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	const (
		pending = nodes.HealthPending
		up      = nodes.HealthUp
		suspect = nodes.HealthSuspect
		down    = nodes.HealthDown
	)
	tests := []struct {
		name string
		o    Observation
		want Verdict
	}{
		{"never enrolled stays failing however good the probe", Observation{pending, false, true, HeartbeatNone, true}, Verdict{}},
		{"enrolled, no heartbeat yet", Observation{pending, true, true, HeartbeatNone, true}, Verdict{}},
		{"heartbeat without a probe is not up", Observation{pending, true, false, HeartbeatFresh, true}, Verdict{}},
		{"probe and heartbeat agree", Observation{pending, true, true, HeartbeatFresh, true}, Verdict{OK: true}},
		{"pending, stale heartbeat in the grace", Observation{pending, true, true, HeartbeatStale, false}, Verdict{}},
		{"up: probe passes, heartbeat fresh", Observation{up, true, true, HeartbeatFresh, true}, Verdict{OK: true}},
		{"up: stale heartbeat, probe passes: agent lost", Observation{up, true, true, HeartbeatStale, true}, Verdict{OK: true, AgentLost: true}},
		{"up: stale heartbeat in the grace: nothing", Observation{up, true, true, HeartbeatStale, false}, Verdict{OK: true}},
		{"suspect: stale heartbeat, probe passes: agent lost", Observation{suspect, true, true, HeartbeatStale, true}, Verdict{OK: true, AgentLost: true}},
		{"up: probe fails, heartbeat fresh: failing", Observation{up, true, false, HeartbeatFresh, true}, Verdict{}},
		{"up: both fail", Observation{up, true, false, HeartbeatStale, true}, Verdict{}},
		{"up without an agent (registered before enrolment existed)", Observation{up, false, true, HeartbeatNone, true}, Verdict{OK: true}},
		{"down: probe passes, heartbeat fresh", Observation{down, true, true, HeartbeatFresh, true}, Verdict{OK: true}},
		{"down: probe passes, agent silent: stays down", Observation{down, true, true, HeartbeatStale, true}, Verdict{}},
		{"down: probe passes, staleness not trusted yet", Observation{down, true, true, HeartbeatStale, false}, Verdict{OK: true}},
		{"down: no agent, probe passes", Observation{down, false, true, HeartbeatNone, true}, Verdict{OK: true}},
		{"down: probe fails", Observation{down, true, false, HeartbeatFresh, true}, Verdict{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Judge(tt.o); got != tt.want {
				t.Errorf("Judge(%+v) = %+v; want %+v", tt.o, got, tt.want)
			}
		})
	}
}

func TestDisrupted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		failing, total, share int
		want                  bool
	}{
		{0, 10, 50, false},
		{2, 2, 50, false},  // two nodes are never a disruption
		{2, 3, 50, false},  // below three
		{3, 3, 50, true},   // all of three
		{3, 6, 50, false},  // exactly half is not more than half
		{4, 6, 50, true},   // more than half
		{5, 10, 50, false}, // half
		{6, 10, 50, true},
		{3, 10, 25, true},
		{10, 10, 100, false}, // 100 %: never
		{11, 20, 50, true},
	}
	for _, tt := range tests {
		if got := Disrupted(tt.failing, tt.total, tt.share); got != tt.want {
			t.Errorf("Disrupted(%d of %d, %d%%) = %v; want %v", tt.failing, tt.total, tt.share, got, tt.want)
		}
	}
}

func TestFlaps(t *testing.T) {
	t.Parallel()
	const (
		pending = nodes.HealthPending
		up      = nodes.HealthUp
		suspect = nodes.HealthSuspect
		down    = nodes.HealthDown
	)
	tests := []struct {
		from, to string
		want     bool
	}{
		{up, down, true},
		{suspect, down, true},
		{down, up, true},
		{up, suspect, false},
		{suspect, up, false},
		{pending, up, false},
		{down, suspect, false},
		{pending, down, false},
	}
	for _, tt := range tests {
		if got := Flaps(tt.from, tt.to); got != tt.want {
			t.Errorf("Flaps(%s -> %s) = %v; want %v", tt.from, tt.to, got, tt.want)
		}
	}
}
