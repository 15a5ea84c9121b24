package agentproto

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Prefix is where the agent API is mounted; the paths below are relative
// to it.
const Prefix = "/api/v1"

// Routes of the agent API, relative to Prefix. AckPattern is the route
// pattern (Go's ServeMux and chi syntax) of AckPath.
const (
	EnrollPath      = "/enroll"
	HeartbeatPath   = "/heartbeat"
	AssignmentsPath = "/assignments" // GET: long-poll; POST: the same, carrying acks
	AckBatchPath    = "/assignments/ack"
	AckPattern      = "/assignments/{id}/ack"
)

// AckPath is the path of the single ack of assignment id.
func AckPath(id int64) string {
	return AssignmentsPath + "/" + strconv.FormatInt(id, 10) + "/ack"
}

// Query parameters of the assignment long-poll.
const (
	QuerySince = "since" // the version the agent has; answer when newer
	QueryWait  = "wait"  // how long to wait for a newer version, a Go duration
	QueryDelta = "delta" // "1": answer what changed since the version, not the whole set
	// QueryStream "1" makes the long-poll a stream: the answer is
	// newline-delimited JSON, one DesiredSet per line, the first when the
	// node's version is newer than since and then one at every change
	// (deltas after the first line, as with QueryDelta), until wait has
	// passed or the call manager shuts down.
	//
	// A GET stream's acks ride the heartbeats (HeartbeatRequest.Acks). A
	// POST stream carries them itself, both ways at once: its body is
	// newline-delimited JSON too, one AckBatchRequest per line, sent while
	// the answer streams, and each line's results come back as a line of
	// their own (an AckLine). When its wait is over the call manager says
	// End; the agent then ends its body, and the answer ends once the
	// acks already sent have their results.
	//
	// With FeatureBeatStream the body also carries the agent's heartbeats
	// (a StreamLine with Beat, the body of a heartbeat request), and each
	// beat's answer comes back as a line (DesiredSet.Beat, the body of a
	// heartbeat answer): a thousand agents' beats then cost the call
	// manager a line read and a line written each, not a request.
	QueryStream = "stream"
)

// FeaturesHeader, on every answer of the agent API, lists what this call
// manager takes beyond the oldest agent API, comma-separated. An agent
// asks for a feature only of a call manager that said it has it: a call
// manager without it may not even answer (Go's server reads a request's
// body to its end before answering a handler that did not, and a POST
// stream's body ends only with the stream).
const FeaturesHeader = "Callplane-Features"

// FeatureAckStream: POST streams carry acks (QueryStream).
const FeatureAckStream = "ack-stream"

// FeatureBeatStream: POST streams carry heartbeats too (StreamLine.Beat).
const FeatureBeatStream = "beat-stream"

// HasFeature reports whether a FeaturesHeader value lists feature.
func HasFeature(header, feature string) bool {
	for f := range strings.SplitSeq(header, ",") {
		if strings.TrimSpace(f) == feature {
			return true
		}
	}
	return false
}

// StreamContentType is the media type of a streamed long-poll answer.
const StreamContentType = "application/x-ndjson"

// StreamPath is the streamed long-poll (QueryStream) of the desired set
// newer than since, open at most wait.
func StreamPath(since int64, wait time.Duration) string {
	return AssignmentsPath + "?" + QuerySince + "=" + strconv.FormatInt(since, 10) + "&" + QueryWait + "=" + wait.String() +
		"&" + QueryDelta + "=1&" + QueryStream + "=1"
}

// PollPath is the long-poll of the desired set newer than since, waiting at
// most wait. With delta (and since > 0) it asks for what changed since
// then instead of the whole set; the server may still answer the whole set
// (DesiredSet.Delta false), and a server that does not know the parameter
// always does.
func PollPath(since int64, wait time.Duration, delta bool) string {
	p := AssignmentsPath + "?" + QuerySince + "=" + strconv.FormatInt(since, 10) + "&" + QueryWait + "=" + wait.String()
	if delta && since > 0 {
		p += "&" + QueryDelta + "=1"
	}
	return p
}

// Timing of the protocol.
const (
	// HeartbeatInterval is how often agents heartbeat: the interval the
	// server sends in every answer, and the one an agent uses until it has
	// heard one. The health checker's stale time is counted in it.
	HeartbeatInterval = time.Second
	// DefaultPollWait is the long-poll wait when the agent names none.
	DefaultPollWait = 30 * time.Second
	// MaxPollWait bounds the wait the server grants a long-poll.
	MaxPollWait = 60 * time.Second
	// FullReportEvery is how often, in heartbeats, an agent reports its
	// running set even when it did not change (it also does when it
	// changes, at most every ReconcileEvery).
	FullReportEvery = 10
	// ReconcileEvery is how often, at most, a call manager compares one
	// node's reported running set with its desired set: drift (a lost
	// ack, a missed delivery) is rare, and comparing every change would
	// cost a query per change on a busy node. Agents report a changed
	// running set no more often than this: a report in between would be
	// decoded and ignored (on a node taking work every second, that was a
	// heartbeat with hundreds of entries every second).
	ReconcileEvery = 5 * time.Second
	// MaxAckBatch bounds the acks of one batch request.
	MaxAckBatch = 1000
	// AckHold is the longest a busy node's acks wait to ride a heartbeat:
	// acks a streamed delivery owes go with the next beat when it comes
	// within this time, else on their own line of the stream's body, so
	// work turns active this soon after its start hook has run while a
	// node taking work several times a second still sends a few ack lines
	// a second at most, each carrying every ack owed by then.
	AckHold = 250 * time.Millisecond
)

// Assignment states an agent sees in its desired set and acks.
const (
	StateAssigned = "assigned" // placed, not yet acked
	StateActive   = "active"   // started by the agent
	StateFailed   = "failed"   // the agent could not start it
	StateEnded    = "ended"    // finished on the node
)

// AdminDisabled is the admin state of a node that takes no work; a
// disabled node's agent keeps heartbeating and gets 403 on the rest.
const AdminDisabled = "disabled"

// bearerPrefix starts the Authorization header of an authenticated agent
// request; the node credential follows.
const bearerPrefix = "Bearer "

// SetBearer puts credential into h's Authorization header.
func SetBearer(h http.Header, credential string) {
	h.Set("Authorization", bearerPrefix+credential)
}

// Bearer returns the credential of an Authorization header, or "" when
// there is none. The agent API never authenticates by cookie.
func Bearer(h http.Header) string {
	if t, ok := strings.CutPrefix(h.Get("Authorization"), bearerPrefix); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// EnrollRequest is the body of POST EnrollPath (no credential yet).
type EnrollRequest struct {
	Token   string `json:"token"`   // one-time join token, cpj_<id>.<secret>
	Address string `json:"address"` // service address to record; empty keeps the registered one
	Version string `json:"version"` // agent version
}

// EnrollResponse is the answer to a successful enrolment: the node's
// identity and its credential, shown this once.
type EnrollResponse struct {
	NodeID              int64  `json:"node_id"`
	NodeName            string `json:"node_name"`
	Kind                string `json:"kind"`
	Credential          string `json:"credential"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
}

// Running is one assignment an agent runs, at the epoch it runs it.
type Running struct {
	ID    int64 `json:"id"`
	Epoch int64 `json:"epoch"`
}

// HeartbeatRequest is the body of POST HeartbeatPath.
type HeartbeatRequest struct {
	Load    int32  `json:"load"`
	Version string `json:"version"`
	// Running is the set of assignments running on the node; nil (left
	// out) when this heartbeat does not report it, an empty list when
	// nothing runs.
	Running []Running `json:"running,omitzero"`
	// Acks are acks the agent owes, as AckBatchRequest.Acks (at most
	// MaxAckBatch): an agent that takes its deliveries as a stream acks
	// them here, with the beat it sends anyway.
	Acks []Ack `json:"acks,omitempty"`
}

// HeartbeatResponse is the answer to a heartbeat.
type HeartbeatResponse struct {
	AdminState          string `json:"admin_state"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	// Credential is set when an administrator rotated the node's
	// credential: the agent stores it and uses it from then on.
	Credential string `json:"credential,omitempty"`
	// Acks are the results of the heartbeat's acks, one per ack in input
	// order, as AckBatchResponse.Results.
	Acks []AckResult `json:"acks,omitempty"`
}

// Assignment is one unit of work the call manager wants a node to run.
type Assignment struct {
	ID    int64  `json:"id"`
	Ref   string `json:"ref"`
	Kind  string `json:"kind"`
	Cost  int32  `json:"cost"`
	Epoch int64  `json:"epoch"`
	State string `json:"state"`
	// CallID, From and To identify a call set up by the SIP front door.
	CallID string `json:"call_id,omitempty"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
}

// DesiredSet is the answer to the long-poll: the full set of work the node
// should run, at a version. When Delta is set (only when the agent asked
// with QueryDelta), it is what changed since the agent's version instead:
// Assignments are the items added or changed, Removed the ids of items
// the node no longer runs; the rest is as the agent had it.
type DesiredSet struct {
	Version     int64        `json:"version"`
	Assignments []Assignment `json:"assignments"`
	Delta       bool         `json:"delta,omitempty"`
	Removed     []int64      `json:"removed,omitempty"`
	// Acks are the results of the acks a POST of the long-poll carried,
	// one per ack in input order, as AckBatchResponse.Results. On a POST
	// stream they come on lines of their own (see AckLine).
	Acks []AckResult `json:"acks,omitempty"`
	// Error, on a POST stream only, says why the call manager ends the
	// stream early: a line of acks it could not read. The agent sends
	// those acks again.
	Error string `json:"error,omitempty"`
	// End, on a POST stream only, is the call manager's last line but for
	// the results of acks already on their way: the agent ends its body
	// (sends no more acks on this stream) and reads on to the end.
	End bool `json:"end,omitempty"`
	// Beat, on a POST stream only, answers a heartbeat the agent sent on
	// the stream's body (StreamLine.Beat), as a heartbeat request's answer.
	Beat *HeartbeatResponse `json:"beat,omitempty"`
}

// AckLine says whether a line of a POST stream answers the agent's body,
// not a delivery: results of acks (Acks), a beat's answer (Beat), an
// Error, or the End. Its Version is the last delivered.
func (ds DesiredSet) AckLine() bool {
	return (len(ds.Acks) > 0 || ds.Beat != nil || ds.Error != "" || ds.End) && len(ds.Assignments) == 0 && len(ds.Removed) == 0
}

// Apply merges a delivery into the set an agent holds (id → assignment):
// a full set replaces it, a delta updates it. It returns the set to hold.
func (ds DesiredSet) Apply(held map[int64]Assignment) map[int64]Assignment {
	if !ds.Delta || held == nil {
		held = make(map[int64]Assignment, len(ds.Assignments))
	}
	for _, id := range ds.Removed {
		delete(held, id)
	}
	for _, a := range ds.Assignments {
		held[a.ID] = a
	}
	return held
}

// AckRequest is the body of POST AckPath(id).
type AckRequest struct {
	State string `json:"state"` // active, failed or ended
	Epoch int64  `json:"epoch"`
	// Error is why a start failed (state failed), as the agent saw it.
	Error string `json:"error,omitempty"`
}

// Ack is one ack of a batch.
type Ack struct {
	ID    int64  `json:"id"`
	Epoch int64  `json:"epoch"`
	State string `json:"state"`
	// Error is why a start failed (state failed), as the agent saw it.
	Error string `json:"error,omitempty"`
}

// AckBatchRequest is the body of POST AckBatchPath, and of a POST of the
// long-poll (AssignmentsPath), which records the acks before it polls.
type AckBatchRequest struct {
	Acks []Ack `json:"acks"`
}

// StreamLine is one line of a POST stream's body (QueryStream): acks the
// agent owes, as AckBatchRequest, or, to a call manager with
// FeatureBeatStream, a heartbeat, as the body of POST HeartbeatPath
// (its acks inside it). The call manager answers a beat with a line
// whose Beat is the heartbeat's answer.
type StreamLine struct {
	Acks []Ack             `json:"acks,omitempty"`
	Beat *HeartbeatRequest `json:"beat,omitempty"`
}

// AckResult is the answer for one ack of a batch: ok, or the error and
// the status the single ack would have answered.
type AckResult struct {
	ID     int64  `json:"id"`
	OK     bool   `json:"ok,omitempty"`
	Error  string `json:"error,omitempty"`
	Status int    `json:"status,omitempty"`
}

// AckBatchResponse answers a batch ack, one result per ack in input
// order, with status 200 even when some acks were refused.
type AckBatchResponse struct {
	Results []AckResult `json:"results"`
}

// OK is the answer to a single ack.
type OK struct {
	OK bool `json:"ok"`
}
