package nodes

import (
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
)

// Node is a worker node as the rest of Callplane sees it. It is converted
// from its database row in one place (nodeFromRow) and carries the rules
// that are decided on one node (Eligible, InMaintenance, Held,
// CanFailOver), so no caller re-types them. JSON shapes are the API's
// business (server.NodeJSON), not this type's.
type Node struct {
	ID                int64
	Name              string
	Kind              string
	Address           string
	Capacity          int32
	Weight            int32
	Used              int32
	Region            string
	Description       string
	AdminState        string
	Health            string
	HealthChangedAt   time.Time
	Flapping          bool
	MaintenanceUntil  *time.Time
	MaintenanceReason string
	EnrolledAt        *time.Time
	AgentVersion      string
	LastHeartbeatAt   *time.Time
	ReportedLoad      int32
	AssignVersion     int64
	RotateRequested   bool
	CreatedAt         time.Time
	UpdatedAt         time.Time
	UpdatedBy         string

	// The health checker's bookkeeping.
	ConsecutiveFail  int32
	ConsecutiveOK    int32
	LastProbeAt      *time.Time
	LastProbeDetail  string
	AgentLostSince   *time.Time
	AgentLostAlerted bool
	DownAlerted      bool
	HoldUntil        *time.Time

	// The last work start (--on-assign hook) failure.
	LastHookError   string
	LastHookErrorAt *time.Time
}

// nodeFromRow converts a node's database row to a Node.
func nodeFromRow(r dbsqlc.Node) Node {
	return Node{
		ID: r.ID, Name: r.Name, Kind: r.Kind, Address: r.Address, Capacity: r.Capacity, Weight: r.Weight,
		Used: r.Used, Region: r.Region, Description: r.Description, AdminState: r.AdminState,
		Health: r.Health, HealthChangedAt: r.HealthChangedAt, Flapping: r.Flapping,
		MaintenanceUntil: r.MaintenanceUntil, MaintenanceReason: r.MaintenanceReason,
		EnrolledAt: r.EnrolledAt, AgentVersion: r.AgentVersion, LastHeartbeatAt: r.LastHeartbeatAt,
		ReportedLoad: r.ReportedLoad, AssignVersion: r.AssignVersion, RotateRequested: r.RotateRequested,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, UpdatedBy: r.UpdatedBy,
		ConsecutiveFail: r.ConsecutiveFail, ConsecutiveOK: r.ConsecutiveOk,
		LastProbeAt: r.LastProbeAt, LastProbeDetail: r.LastProbeDetail,
		AgentLostSince: r.AgentLostSince, AgentLostAlerted: r.AgentLostAlerted, DownAlerted: r.DownAlerted,
		HoldUntil: r.HoldUntil, LastHookError: r.LastHookError, LastHookErrorAt: r.LastHookErrorAt,
	}
}

// InMaintenance reports whether the node is in maintenance at now: no
// new work, no alerts, no automatic failover.
func (n Node) InMaintenance(now time.Time) bool { return inMaintenance(n.MaintenanceUntil, now) }

// inMaintenance is the rule of InMaintenance on a node's mirror of its
// maintenance windows: in force until, when set and still to come.
func inMaintenance(until *time.Time, now time.Time) bool { return until != nil && until.After(now) }

// Held reports whether the node is held down for flapping at now.
func (n Node) Held(now time.Time) bool {
	return n.HoldUntil != nil && n.HoldUntil.After(now)
}

// AgentLost reports whether the node's agent is silent while its service
// answers its probe.
func (n Node) AgentLost() bool { return n.AgentLostSince != nil }

// Enrolled reports whether an agent has enrolled for the node.
func (n Node) Enrolled() bool { return n.EnrolledAt != nil }

// AnswersCalls reports whether the node may take new SIP calls from the
// front door at now: enabled, up, not held down for flapping, enrolled and
// not in maintenance. A call goes straight to the media server, so a lost
// agent does not matter. It is the Go twin of node_eligibility's
// answers_calls (migration 00012).
func (n Node) AnswersCalls(now time.Time) bool {
	return n.AdminState == StateEnabled && n.Health == HealthUp && !n.Flapping &&
		n.Enrolled() && !n.InMaintenance(now)
}

// Eligible reports whether the node may take new work that its agent
// picks up and acknowledges (every placement but the SIP front door's
// calls) at now: it answers calls and its agent is not lost. It is the Go
// twin of node_eligibility's eligible (migration 00012), which the
// placement queries use; TestEligibleAgreesWithSQL keeps the two equal.
func (n Node) Eligible(now time.Time) bool {
	return n.AnswersCalls(now) && !n.AgentLost()
}

// CanFailOver reports whether the work on the node moves away on its own
// when the node is down, under its kind's failover policy ("auto" or
// "manual"): only under auto, and not while it is in maintenance or
// disabled (a disabled node's work has moved already).
func (n Node) CanFailOver(policy string, now time.Time) bool {
	return policy == "auto" && !n.InMaintenance(now) && n.AdminState != StateDisabled
}

// Work is a work item: a call, IVR, queue, meeting or IM shard, with the
// name of the node it is on (empty when it is on none, or not read).
type Work struct {
	ID        int64
	Ref       string
	Kind      string
	Cost      int32
	State     string
	NodeID    *int64
	Epoch     int64
	CreatedAt time.Time
	UpdatedAt time.Time
	EndedAt   *time.Time
	LastError string
	NodeName  string
	sortKey   string
}

// workFromRow converts a work item's database row to a Work.
func workFromRow(r dbsqlc.Work) Work {
	return Work{ID: r.ID, Ref: r.Ref, Kind: r.Kind, Cost: r.Cost, State: r.State, NodeID: r.NodeID,
		Epoch: r.Epoch, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, EndedAt: r.EndedAt, LastError: r.LastError}
}

// workOnNode is a work item with the name of its node, as the work
// queries that join the node return it (they have the same columns).
type workOnNode interface {
	dbsqlc.WorkListRow | dbsqlc.WorkGetByRefRow
}

// workFromJoined converts a work row joined with its node's name.
func workFromJoined[R workOnNode](r R) Work {
	j := dbsqlc.WorkListRow(r)
	w := workFromRow(dbsqlc.Work{ID: j.ID, Ref: j.Ref, Kind: j.Kind, Cost: j.Cost, State: j.State, NodeID: j.NodeID,
		Epoch: j.Epoch, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, EndedAt: j.EndedAt, LastError: j.LastError})
	w.NodeName = j.NodeName
	return w
}

// Cursor is the work item's place in the page it was read in.
func (w Work) Cursor() (string, int64) { return w.sortKey, w.ID }

// Live reports whether the work runs or is about to run on a node.
func (w Work) Live() bool { return w.State == WorkAssigned || w.State == WorkActive }

// fromRows converts rows of a query to domain values, one by one.
func fromRows[R, T any](rows []R, f func(R) T) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = f(r)
	}
	return out
}
