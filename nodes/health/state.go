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

// Heartbeat is what the checker knows of a node agent's heartbeats.
type Heartbeat int

// Heartbeat states.
const (
	HeartbeatNone  Heartbeat = iota // the agent never sent one
	HeartbeatFresh                  // within the stale time
	HeartbeatStale                  // older than the stale time
)

// Observation is one round's view of a node, the input of Judge.
type Observation struct {
	// Health is the node's health before this round.
	Health string
	// Enrolled: an agent has enrolled for the node.
	Enrolled bool
	// ProbeOK: the active probe of the service address passed.
	ProbeOK bool
	// Heartbeat is the freshness of the agent's last heartbeat.
	Heartbeat Heartbeat
	// Trusted: heartbeat staleness means something, because this instance
	// has led, with the database reachable, for at least the stale time.
	// Before that, a stale heartbeat may only be the control plane's own
	// outage (a takeover, a database restart) and is not held against the
	// agent.
	Trusted bool
}

// Verdict is what Judge makes of an Observation.
type Verdict struct {
	// OK is the check outcome the state machine (Step) is fed.
	OK bool
	// AgentLost: the service answers its probe but its agent has gone
	// quiet. It is shown and, past a grace, mailed; it moves no work.
	AgentLost bool
}

// Judge decides one node's check. The service's own probe is the ground
// truth of its health; the heartbeat only decides whether a node may come
// up:
//
//   - a pending node (never up) comes up only when an enrolled agent's
//     heartbeat is fresh and the probe passes: probe and agent agree;
//   - a down node comes back when the probe passes and its agent (if it
//     has one) is heartbeating, or when staleness is not yet trusted;
//   - an up or suspect node is judged by its probe alone; a stale
//     heartbeat with a passing probe flags it agent lost.
func Judge(o Observation) Verdict {
	fresh := o.Heartbeat == HeartbeatFresh
	switch o.Health {
	case nodes.HealthPending:
		return Verdict{OK: o.ProbeOK && o.Enrolled && fresh}
	case nodes.HealthDown:
		return Verdict{OK: o.ProbeOK && (!o.Enrolled || fresh || !o.Trusted)}
	}
	return Verdict{OK: o.ProbeOK, AgentLost: o.ProbeOK && o.Enrolled && o.Trusted && !fresh}
}

// MinDisruptionNodes is the fewest failing nodes that can be a disruption:
// one or two nodes failing together are ordinary failures.
const MinDisruptionNodes = 3

// Disrupted reports whether failing of total watched nodes failing in one
// round is a disruption: more than sharePct percent of them and at least
// MinDisruptionNodes. Then the checker distrusts what it sees (its own
// network or the control plane is the likelier fault) and holds automatic
// failover, like the Kubernetes node lifecycle controller's unhealthy-zone
// threshold.
func Disrupted(failing, total, sharePct int) bool {
	return failing >= MinDisruptionNodes && failing*100 > sharePct*total
}

// Flaps reports whether a health change counts towards flap detection:
// only a change between up (or suspect, a failing up node) and down, in
// either direction. Enrolment, suspect blips and pending nodes do not.
func Flaps(from, to string) bool {
	switch {
	case to == nodes.HealthDown:
		return from == nodes.HealthUp || from == nodes.HealthSuspect
	case from == nodes.HealthDown:
		return to == nodes.HealthUp
	}
	return false
}
