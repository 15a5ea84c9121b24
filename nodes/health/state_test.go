package health

import (
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
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
	s := Builtin()
	worst := s.ProbeInterval + time.Duration(s.FailThreshold-1)*s.ProbeInterval + s.ProbeTimeout
	best := time.Duration(s.FailThreshold-1)*s.ProbeInterval + s.ProbeTimeout
	if best < 1500*time.Millisecond || worst > 3*time.Second {
		t.Fatalf("default detection between %s and %s; want within 3 s and not so quick that one lost packet fails a node", best, worst)
	}
}
