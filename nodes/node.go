package nodes

import (
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
)

// Node is a worker node as the rest of Callplane sees it. It is converted
// from its database row in one place (NodeFromRow) and carries the rules
// that are decided on one node (Eligible, InMaintenance, CanFailOver), so
// no caller re-types them.
type Node struct {
	ID                int64      `json:"id"`
	Name              string     `json:"name"`
	Kind              string     `json:"kind"`
	Address           string     `json:"address"`
	Capacity          int32      `json:"capacity"`
	Weight            int32      `json:"weight"`
	Used              int32      `json:"used"`
	Region            string     `json:"region"`
	Description       string     `json:"description"`
	AdminState        string     `json:"admin_state"`
	Health            string     `json:"health"`
	HealthChangedAt   time.Time  `json:"health_changed_at"`
	Flapping          bool       `json:"flapping"`
	MaintenanceUntil  *time.Time `json:"maintenance_until,omitempty"`
	MaintenanceReason string     `json:"maintenance_reason,omitempty"`
	EnrolledAt        *time.Time `json:"enrolled_at,omitempty"`
	AgentVersion      string     `json:"agent_version"`
	LastHeartbeatAt   *time.Time `json:"last_heartbeat_at,omitempty"`
	ReportedLoad      int32      `json:"reported_load"`
}

// NodeFromRow converts a node's database row to a Node.
func NodeFromRow(r dbsqlc.Node) Node {
	return Node{
		ID: r.ID, Name: r.Name, Kind: r.Kind, Address: r.Address, Capacity: r.Capacity, Weight: r.Weight,
		Used: r.Used, Region: r.Region, Description: r.Description, AdminState: r.AdminState,
		Health: r.Health, HealthChangedAt: r.HealthChangedAt, Flapping: r.Flapping,
		MaintenanceUntil: r.MaintenanceUntil, MaintenanceReason: r.MaintenanceReason,
		EnrolledAt: r.EnrolledAt, AgentVersion: r.AgentVersion, LastHeartbeatAt: r.LastHeartbeatAt,
		ReportedLoad: r.ReportedLoad,
	}
}

// InMaintenance reports whether the node is in maintenance at now: no
// new work, no alerts, no automatic failover.
func (n Node) InMaintenance(now time.Time) bool {
	return n.MaintenanceUntil != nil && n.MaintenanceUntil.After(now)
}

// Eligible reports whether the node may take new work at now: enabled,
// up, not held down for flapping, enrolled and not in maintenance. It is
// the Go twin of the node_eligibility view (migration 00004), which the
// placement queries use; TestEligibleAgreesWithSQL keeps the two equal.
func (n Node) Eligible(now time.Time) bool {
	return n.AdminState == StateEnabled && n.Health == HealthUp && !n.Flapping &&
		n.EnrolledAt != nil && !n.InMaintenance(now)
}

// CanFailOver reports whether the work on the node moves away on its own
// when the node is down, under its kind's failover policy ("auto" or
// "manual"): only under auto, and not while it is in maintenance or
// disabled (a disabled node's work has moved already).
func (n Node) CanFailOver(policy string, now time.Time) bool {
	return policy == "auto" && !n.InMaintenance(now) && n.AdminState != StateDisabled
}

// Work is a work item: a call, IVR, queue, meeting or IM shard.
type Work struct {
	ID        int64      `json:"id"`
	Ref       string     `json:"ref"`
	Kind      string     `json:"kind"`
	Cost      int32      `json:"cost"`
	State     string     `json:"state"`
	NodeID    *int64     `json:"node_id,omitempty"`
	Epoch     int64      `json:"epoch"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// WorkFromRow converts a work item's database row to a Work.
func WorkFromRow(r dbsqlc.Work) Work {
	return Work{ID: r.ID, Ref: r.Ref, Kind: r.Kind, Cost: r.Cost, State: r.State, NodeID: r.NodeID,
		Epoch: r.Epoch, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, EndedAt: r.EndedAt}
}

// Live reports whether the work runs or is about to run on a node.
func (w Work) Live() bool { return w.State == WorkAssigned || w.State == WorkActive }
