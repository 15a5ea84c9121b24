package health

import "github.com/callplane/callplane/nodes"

// State is a node's place in the health state machine.
type State struct {
	Health string // pending, up, suspect or down
	Fail   int    // consecutive failed checks
	OK     int    // consecutive passed checks
}

// Thresholds are N (fail) and M (recover).
type Thresholds struct {
	Fail, Recover int
}

// Step applies one check outcome to cur:
//
//   - pending → up after M successes; failures keep it pending (it was
//     never seen, so there is nothing to alert about);
//   - up → suspect at the first failure (→ down at once when N is 1);
//   - suspect → down at N consecutive failures, → up at the first success;
//   - down → up after M consecutive successes.
//
// held means the node is flapping: it may fail further but not come back,
// and a suspect node that would come back is held down instead.
func Step(cur State, ok bool, th Thresholds, held bool) State {
	next := cur
	if ok {
		next.Fail, next.OK = 0, cur.OK+1
		switch cur.Health {
		case nodes.HealthPending, nodes.HealthDown:
			if next.OK >= th.Recover {
				next.Health = nodes.HealthUp
			}
		case nodes.HealthSuspect:
			next.Health = nodes.HealthUp
		}
	} else {
		next.Fail, next.OK = cur.Fail+1, 0
		switch cur.Health {
		case nodes.HealthUp, nodes.HealthSuspect:
			next.Health = nodes.HealthSuspect
			if next.Fail >= th.Fail {
				next.Health = nodes.HealthDown
			}
		}
	}
	if held && next.Health == nodes.HealthUp && (cur.Health == nodes.HealthDown || cur.Health == nodes.HealthSuspect) {
		next.Health = nodes.HealthDown
	}
	return next
}
