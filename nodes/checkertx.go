package nodes

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// The health checker's writes. The checker (nodes/health) decides what a
// probe round means; the domain owns the transactions and the SQL. Each
// of the checker's transactions is a CheckerTx, opened by InCheckerTx
// behind the leader's fence, so the checker never touches the pool or the
// generated queries.

// Fencer checks, inside a transaction, that this instance still leads
// with epoch (server.Leader implements it). It returns ErrNotLeader when
// a newer leader exists.
type Fencer interface {
	Fence(ctx context.Context, tx pgx.Tx, epoch int64) error
}

// CheckerTx is one transaction of the health checker: the reads and
// writes it may make, each inside the transaction.
type CheckerTx struct {
	s  *Service
	tx pgx.Tx
}

// InCheckerTx runs fn in a transaction that first checks the leader's
// fence, under the database retry policy: when Postgres breaks a deadlock
// or a serialization conflict by rolling it back, fn runs again (it must
// re-read what it decides on), so a race with an administrator's change
// never drops a round.
func (s *Service) InCheckerTx(ctx context.Context, fence Fencer, epoch int64, fn func(*CheckerTx) error) error {
	return db.InTxRetry(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fence.Fence(ctx, tx, epoch); err != nil {
			return err
		}
		return fn(&CheckerTx{s: s, tx: tx})
	})
}

// row is the node's database row again, for the domain's own writers.
func (n Node) row() dbsqlc.Node {
	return dbsqlc.Node{
		ID: n.ID, Name: n.Name, Kind: n.Kind, Address: n.Address, Capacity: n.Capacity, Weight: n.Weight,
		Region: n.Region, Description: n.Description, AdminState: n.AdminState, Health: n.Health,
		HealthChangedAt: n.HealthChangedAt, ConsecutiveFail: n.ConsecutiveFail, ConsecutiveOk: n.ConsecutiveOK,
		LastProbeAt: n.LastProbeAt, LastProbeDetail: n.LastProbeDetail, Flapping: n.Flapping,
		MaintenanceUntil: n.MaintenanceUntil, MaintenanceReason: n.MaintenanceReason, Used: n.Used,
		AssignVersion: n.AssignVersion, EnrolledAt: n.EnrolledAt, AgentVersion: n.AgentVersion,
		LastHeartbeatAt: n.LastHeartbeatAt, ReportedLoad: n.ReportedLoad, RotateRequested: n.RotateRequested,
		CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt, UpdatedBy: n.UpdatedBy, AgentLostSince: n.AgentLostSince,
		AgentLostAlerted: n.AgentLostAlerted, DownAlerted: n.DownAlerted, HoldUntil: n.HoldUntil,
		LastHookError: n.LastHookError, LastHookErrorAt: n.LastHookErrorAt,
	}
}

// CheckerStarted records that this instance's checker started.
func (t *CheckerTx) CheckerStarted(ctx context.Context, holder string, epoch int64) error {
	return t.s.q.CheckerStart(ctx, t.tx, dbsqlc.CheckerStartParams{Holder: holder, Epoch: epoch})
}

// CheckerRoundDone records a completed round: how long it took over how
// many nodes.
func (t *CheckerTx) CheckerRoundDone(ctx context.Context, holder string, epoch int64, took time.Duration, nodes int) error {
	return t.s.q.CheckerRound(ctx, t.tx, dbsqlc.CheckerRoundParams{
		Holder: holder, Epoch: epoch, RoundMs: int32(took.Milliseconds()), Nodes: int32(nodes),
	})
}

// ProbeRecord is one probe's outcome, for the probe history.
type ProbeRecord struct {
	NodeID  int64
	OK      bool
	Latency time.Duration
	Detail  string
}

// ProbeState is a node's health bookkeeping after a probe: its health,
// its consecutive failures and passes, what the probe said, and whether
// it is held for flapping.
type ProbeState struct {
	NodeID   int64
	Health   string
	Fail, OK int
	Detail   string
	Flapping bool
}

// RecordProbes writes a round's probe history and the bookkeeping of the
// nodes whose health did not change (one statement each, whatever the
// number of nodes); with prune it also deletes old probe results and flap
// records.
func (t *CheckerTx) RecordProbes(ctx context.Context, probes []ProbeRecord, states []ProbeState, prune bool) error {
	var results dbsqlc.ProbeResultInsertBatchParams
	for _, p := range probes {
		results.NodeIds = append(results.NodeIds, p.NodeID)
		results.Oks = append(results.Oks, p.OK)
		results.Latencies = append(results.Latencies, p.Latency.Microseconds())
		results.Details = append(results.Details, p.Detail)
	}
	if err := t.s.q.ProbeResultInsertBatch(ctx, t.tx, results); err != nil {
		return fmt.Errorf("record probe results: %w", err)
	}
	if len(states) > 0 {
		var batch dbsqlc.NodeProbeBatchParams
		for _, st := range states {
			batch.Ids = append(batch.Ids, st.NodeID)
			batch.Healths = append(batch.Healths, st.Health)
			batch.Fails = append(batch.Fails, int32(st.Fail))
			batch.Oks = append(batch.Oks, int32(st.OK))
			batch.Details = append(batch.Details, st.Detail)
			batch.Flappings = append(batch.Flappings, st.Flapping)
		}
		if err := t.s.q.NodeProbeBatch(ctx, t.tx, batch); err != nil {
			return fmt.Errorf("record probe round: %w", err)
		}
	}
	if !prune {
		return nil
	}
	if _, err := t.s.q.ProbeResultPrune(ctx, t.tx); err != nil {
		return fmt.Errorf("prune probe results: %w", err)
	}
	if _, err := t.s.q.TransitionPrune(ctx, t.tx); err != nil {
		return fmt.Errorf("prune health transitions: %w", err)
	}
	return nil
}

// LockNode reads a node and locks its row until the transaction ends.
func (t *CheckerTx) LockNode(ctx context.Context, id int64) (Node, error) {
	n, err := t.s.q.NodeGetForUpdate(ctx, t.tx, id)
	if err != nil {
		return Node{}, db.Translate(err)
	}
	return nodeFromRow(n), nil
}

// SetHealth writes a node's probe outcome and health; HoldUntil nil ends
// a flap hold. It returns the node as written.
func (t *CheckerTx) SetHealth(ctx context.Context, st ProbeState, holdUntil *time.Time) (Node, error) {
	n, err := t.s.q.NodeSetHealth(ctx, t.tx, dbsqlc.NodeSetHealthParams{
		ID: st.NodeID, Health: st.Health, ConsecutiveFail: int32(st.Fail), ConsecutiveOk: int32(st.OK),
		LastProbeDetail: st.Detail, Flapping: st.Flapping, HoldUntil: holdUntil,
	})
	return nodeFromRow(n), err
}

// RecordFlap records an up<->down transition of a node and returns how
// many it made within the window, this one included. Flaps are kept apart
// from the event log, which people read and retention prunes.
func (t *CheckerTx) RecordFlap(ctx context.Context, nodeID int64, from, to string, window time.Duration) (int, error) {
	if err := t.s.q.TransitionInsert(ctx, t.tx, dbsqlc.TransitionInsertParams{NodeID: nodeID, FromHealth: from, ToHealth: to}); err != nil {
		return 0, err
	}
	n, err := t.s.q.TransitionCount(ctx, t.tx, dbsqlc.TransitionCountParams{NodeID: nodeID, WindowSeconds: window.Seconds()})
	return int(n), err
}

// SetAgentLost sets (since not nil) or clears a node's agent-lost flag,
// and whether it was mailed.
func (t *CheckerTx) SetAgentLost(ctx context.Context, nodeID int64, since *time.Time, alerted bool) error {
	return t.s.q.NodeSetAgentLost(ctx, t.tx, dbsqlc.NodeSetAgentLostParams{ID: nodeID, AgentLostSince: since, AgentLostAlerted: alerted})
}

// SetDownAlerted records whether the DOWN email of a node's outage was
// queued.
func (t *CheckerTx) SetDownAlerted(ctx context.Context, nodeID int64, alerted bool) error {
	return t.s.q.NodeSetDownAlerted(ctx, t.tx, dbsqlc.NodeSetDownAlertedParams{ID: nodeID, DownAlerted: alerted})
}

// Event writes an event by the health checker, about node n (nil: about
// the cluster).
func (t *CheckerTx) Event(ctx context.Context, n *Node, typ, severity, msg string) error {
	if n == nil {
		return t.s.event(ctx, t.tx, nil, typ, severity, ActorChecker.Name, msg)
	}
	row := n.row()
	return t.s.event(ctx, t.tx, &row, typ, severity, ActorChecker.Name, msg)
}

// QueueAlert puts an alert in the outbox, about nodeName ("" for none).
func (t *CheckerTx) QueueAlert(ctx context.Context, typ, nodeName string, payload []byte) error {
	return t.s.q.AlertInsert(ctx, t.tx, dbsqlc.AlertInsertParams{Type: typ, NodeName: nodeName, Payload: payload})
}

// moveAway moves all of a down node's work to the other eligible nodes
// of its kind (automatic failover), as disabling it would.
func (t *CheckerTx) MoveAway(ctx context.Context, n Node, cause string) (MoveResult, error) {
	row := n.row()
	return t.s.moveAway(ctx, t.tx, &row, cause, ActorChecker)
}

// wouldStrand reports what moving all of a node's work away would leave
// unplaced, without moving it.
func (t *CheckerTx) WouldStrand(ctx context.Context, n Node) (MoveResult, error) {
	row := n.row()
	return t.s.wouldStrand(ctx, t.tx, &row)
}

// LiveWork counts the work items assigned to or active on a node.
func (t *CheckerTx) LiveWork(ctx context.Context, nodeID int64) (int64, error) {
	return t.s.q.NodeLiveWorkCount(ctx, t.tx, &nodeID)
}

// Ack is who acknowledged a node's down alert, and why.
type Ack struct {
	By   string
	Note string
	At   time.Time
}

// AckSince returns the acknowledgement of a node's down alerts queued
// since it went down, if any.
func (t *CheckerTx) AckSince(ctx context.Context, nodeName string, since time.Time) (Ack, bool, error) {
	row, err := t.s.q.AlertAckSince(ctx, t.tx, dbsqlc.AlertAckSinceParams{NodeName: nodeName, Since: since})
	if db.IsNotFound(err) {
		return Ack{}, false, nil
	}
	if err != nil || row.AckedAt == nil {
		return Ack{}, false, err
	}
	return Ack{By: row.AckedBy, Note: row.AckNote, At: *row.AckedAt}, true, nil
}

// Disruption reads the disruption guard's state.
func (t *CheckerTx) Disruption(ctx context.Context) (Disruption, error) {
	d, err := t.s.q.DisruptionGet(ctx, t.tx)
	return disruptionFromRow(d), err
}

// SetDisruption starts or updates the disruption (startedAt set) or ends
// it (nil), which also forgets its confirmation.
func (t *CheckerTx) SetDisruption(ctx context.Context, startedAt *time.Time, failing, total int, nodes string) error {
	return t.s.q.DisruptionSet(ctx, t.tx, dbsqlc.DisruptionSetParams{StartedAt: startedAt, Failing: int32(failing), Total: int32(total), Nodes: nodes})
}

// DueReminder is a node down for longer than the reminder interval since
// its last down alert, which nobody acknowledged.
type DueReminder struct {
	NodeID          int64
	Node            string
	HealthChangedAt time.Time
	AlertID         int64
	Payload         []byte
}

// RemindersDue lists the nodes whose down alert is due to be repeated:
// down for longer than every since their last alert, not acknowledged,
// not disabled and not in maintenance.
func (t *CheckerTx) RemindersDue(ctx context.Context, every time.Duration) ([]DueReminder, error) {
	rows, err := t.s.q.AlertReminderDue(ctx, t.tx, every.Seconds())
	return fromRows(rows, func(r dbsqlc.AlertReminderDueRow) DueReminder {
		return DueReminder{NodeID: r.ID, Node: r.Name, HealthChangedAt: r.HealthChangedAt, AlertID: r.AlertID, Payload: r.Payload}
	}), err
}
