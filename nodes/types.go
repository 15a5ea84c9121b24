package nodes

import (
	"fmt"
)

// Node kinds.
const (
	KindMedia   = "media"
	KindIVR     = "ivr"
	KindQueue   = "queue"
	KindMeeting = "meeting"
	KindIM      = "im"
)

// Kinds lists the node kinds in display order.
var Kinds = []string{KindMedia, KindIVR, KindQueue, KindMeeting, KindIM}

// Admin states.
const (
	StateEnabled  = "enabled"
	StateDraining = "draining"
	StateDisabled = "disabled"
)

// AdminStates lists the admin states.
var AdminStates = []string{StateEnabled, StateDraining, StateDisabled}

// Health states.
const (
	HealthPending = "pending"
	HealthUp      = "up"
	HealthSuspect = "suspect"
	HealthDown    = "down"
)

// Healths lists the health states.
var Healths = []string{HealthPending, HealthUp, HealthSuspect, HealthDown}

// Work kinds and states.
const (
	WorkCall    = "call"
	WorkIVR     = "ivr"
	WorkQueue   = "queue"
	WorkMeeting = "meeting"
	WorkIM      = "im"

	WorkAssigned = "assigned"
	WorkActive   = "active"
	WorkEnded    = "ended"
	WorkUnplaced = "unplaced"
)

// WorkKinds lists the work kinds.
var WorkKinds = []string{WorkCall, WorkIVR, WorkQueue, WorkMeeting, WorkIM}

// WorkStates lists the work states.
var WorkStates = []string{WorkAssigned, WorkActive, WorkUnplaced, WorkEnded}

var workToNode = map[string]string{
	WorkCall: KindMedia, WorkIVR: KindIVR, WorkQueue: KindQueue, WorkMeeting: KindMeeting, WorkIM: KindIM,
}

var nodeToWork = map[string]string{
	KindMedia: WorkCall, KindIVR: WorkIVR, KindQueue: WorkQueue, KindMeeting: WorkMeeting, KindIM: WorkIM,
}

// NodeKindFor returns the node kind that runs a work kind.
func NodeKindFor(workKind string) (string, bool) {
	k, ok := workToNode[workKind]
	return k, ok
}

// WorkKindFor returns the work kind a node kind runs.
func WorkKindFor(nodeKind string) string { return nodeToWork[nodeKind] }

// WorkNoun names n work items of a work kind for people: "3 calls".
func WorkNoun(kind string, n int64) string {
	nouns := map[string]string{WorkCall: "call", WorkIVR: "IVR", WorkQueue: "queue", WorkMeeting: "meeting", WorkIM: "IM shard"}
	noun := nouns[kind]
	if noun == "" {
		noun = "work item"
	}
	if n != 1 {
		noun += "s"
	}
	return fmt.Sprintf("%d %s", n, noun)
}

// Actor is who makes a change, for the audit log and events.
type Actor struct {
	Name string // user email, "api:NAME", "cli", "health-checker", "node:NAME"
	Addr string // source address
}

// System actors.
var (
	ActorCLI     = Actor{Name: "cli", Addr: "local"}
	ActorChecker = Actor{Name: "health-checker", Addr: "local"}
	// ActorPreview makes the changes a preview rolls back.
	ActorPreview = Actor{Name: "preview", Addr: "local"}
)
