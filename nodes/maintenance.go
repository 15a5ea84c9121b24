package nodes

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// Limits on maintenance windows.
const (
	MaxMaintenanceLength = 31 * 24 * time.Hour
	MaxMaintenanceAhead  = 366 * 24 * time.Hour
	// maintenanceSlack is how far in the past a window may start, so a
	// script's "now" that took a moment to arrive is still accepted.
	maintenanceSlack = 5 * time.Minute
)

// MaintenanceInput is a window an administrator schedules. A zero Start
// means now.
type MaintenanceInput struct {
	Start  time.Time
	End    time.Time
	Reason string
}

func validateMaintenance(in MaintenanceInput, now time.Time) (MaintenanceInput, error) {
	fe := problem.FieldErrors{}
	in.Reason = strings.TrimSpace(in.Reason)
	if in.Start.IsZero() {
		in.Start = now
	}
	switch {
	case in.Reason == "":
		fe.Add("reason", "say why the node is in maintenance")
	case len(in.Reason) > 500:
		fe.Add("reason", "reason must be at most 500 characters")
	}
	switch {
	case in.Start.Before(now.Add(-maintenanceSlack)):
		fe.Add("start", "start must not be in the past")
	case in.Start.After(now.Add(MaxMaintenanceAhead)):
		fe.Add("start", "start must be within a year")
	}
	switch {
	case in.End.IsZero():
		fe.Add("end", "end is required")
	case !in.End.After(in.Start):
		fe.Add("end", "end must be after start")
	case !in.End.After(now):
		fe.Add("end", "end must be in the future")
	case in.End.Sub(in.Start) > MaxMaintenanceLength:
		fe.Add("end", "a window lasts at most 31 days")
	}
	return in, fe.Err()
}

// AddMaintenance schedules a maintenance window on a node. Nothing is
// written when the input is invalid.
func (s *Service) AddMaintenance(ctx context.Context, actor Actor, nodeName string, in MaintenanceInput) (MaintenanceWindow, error) {
	in, err := validateMaintenance(in, time.Now())
	if err != nil {
		return MaintenanceWindow{}, err
	}
	var w dbsqlc.MaintenanceWindow
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := s.q.NodeGetByNameForUpdate(ctx, tx, nodeName)
		if err != nil {
			return fmt.Errorf("node %q: %w", nodeName, db.Translate(err))
		}
		w, err = s.q.MaintenanceInsert(ctx, tx, dbsqlc.MaintenanceInsertParams{
			NodeID: n.ID, StartsAt: in.Start, EndsAt: in.End, Reason: in.Reason, CreatedBy: actor.Name,
		})
		if err != nil {
			return err
		}
		span := fmtSpan(w.StartsAt, w.EndsAt)
		if err := s.audit(ctx, tx, actor, "node.maintenance.add", n.Name, fmt.Sprintf("window %d %s: %s", w.ID, span, w.Reason)); err != nil {
			return err
		}
		if err := s.event(ctx, tx, &n, "maintenance", "info", actor.Name,
			fmt.Sprintf("Maintenance of %s scheduled by %s, %s: %s", n.Name, actor.Name, span, w.Reason)); err != nil {
			return err
		}
		return s.syncMaintenance(ctx, tx, []int64{n.ID})
	})
	return windowFromRow(w), err
}

// CancelMaintenance cancels a window; a window in force ends at once.
func (s *Service) CancelMaintenance(ctx context.Context, actor Actor, id int64) (MaintenanceWindow, error) {
	var w dbsqlc.MaintenanceWindow
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := s.q.MaintenanceGetForUpdate(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("maintenance window %d: %w", id, db.Translate(err))
		}
		if cur.CancelledAt != nil {
			return fmt.Errorf("maintenance window %d was already cancelled: %w", id, ErrConflict)
		}
		if !cur.EndsAt.After(time.Now()) {
			return fmt.Errorf("maintenance window %d has already ended: %w", id, ErrConflict)
		}
		// Lock the node before touching its mirror, as every writer of
		// a node row does.
		n, err := s.q.NodeGetForUpdate(ctx, tx, cur.NodeID)
		if err != nil {
			return db.Translate(err)
		}
		if w, err = s.q.MaintenanceCancel(ctx, tx, dbsqlc.MaintenanceCancelParams{ID: id, CancelledBy: actor.Name}); err != nil {
			return db.Translate(err)
		}
		span := fmtSpan(w.StartsAt, w.EndsAt)
		if err := s.audit(ctx, tx, actor, "node.maintenance.cancel", n.Name, fmt.Sprintf("window %d %s", w.ID, span)); err != nil {
			return err
		}
		if err := s.event(ctx, tx, &n, "maintenance", "info", actor.Name,
			fmt.Sprintf("Maintenance of %s (%s) cancelled by %s", n.Name, span, actor.Name)); err != nil {
			return err
		}
		return s.syncMaintenance(ctx, tx, []int64{n.ID})
	})
	return windowFromRow(w), err
}

// ListMaintenance lists a node's windows that have not ended (all: with
// the cancelled and ended ones, newest 200).
func (s *Service) ListMaintenance(ctx context.Context, nodeName string, all bool) ([]MaintenanceWindow, error) {
	n, err := s.GetNode(ctx, nodeName)
	if err != nil {
		return nil, err
	}
	rows, err := s.q.MaintenanceListByNode(ctx, s.pool, dbsqlc.MaintenanceListByNodeParams{NodeID: n.ID, IncludeAll: all})
	return fromRows(rows, func(r dbsqlc.MaintenanceWindow) MaintenanceWindow {
		w := windowFromRow(r)
		w.NodeName = n.Name
		return w
	}), err
}

// ListCurrentMaintenance lists every window in force or to come.
func (s *Service) ListCurrentMaintenance(ctx context.Context) ([]MaintenanceWindow, error) {
	rows, err := s.q.MaintenanceListCurrent(ctx, s.pool)
	return fromRows(rows, func(r dbsqlc.MaintenanceListCurrentRow) MaintenanceWindow {
		w := windowFromRow(dbsqlc.MaintenanceWindow{ID: r.ID, NodeID: r.NodeID, StartsAt: r.StartsAt, EndsAt: r.EndsAt, Reason: r.Reason,
			CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, CancelledAt: r.CancelledAt, CancelledBy: r.CancelledBy})
		w.NodeName = r.NodeName
		return w
	}), err
}

// MaintenanceWindow is a span of time in which a node is in maintenance:
// no new work, no alerts, no automatic failover. NodeName is set by the
// lists.
type MaintenanceWindow struct {
	ID          int64
	NodeID      int64
	NodeName    string
	StartsAt    time.Time
	EndsAt      time.Time
	Reason      string
	CreatedBy   string
	CreatedAt   time.Time
	CancelledAt *time.Time
	CancelledBy string
}

// Active reports whether the window is in force at now: started, not
// ended and not cancelled.
func (w MaintenanceWindow) Active(now time.Time) bool {
	return w.CancelledAt == nil && !w.StartsAt.After(now) && w.EndsAt.After(now)
}

func windowFromRow(r dbsqlc.MaintenanceWindow) MaintenanceWindow {
	return MaintenanceWindow{ID: r.ID, NodeID: r.NodeID, StartsAt: r.StartsAt, EndsAt: r.EndsAt, Reason: r.Reason,
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, CancelledAt: r.CancelledAt, CancelledBy: r.CancelledBy}
}

// SyncMaintenance mirrors the windows in force into the node rows: a
// window whose start has come puts its node in maintenance until the end
// of the windows that follow on without a gap. The leader runs it every
// second; adding or cancelling a window runs it for that node at once.
func (s *Service) SyncMaintenance(ctx context.Context) error {
	return s.inTx(ctx, func(tx pgx.Tx) error { return s.syncMaintenance(ctx, tx, nil) })
}

// syncMaintenance mirrors the windows of the given nodes (all nodes when
// ids is nil) and writes an event for each node whose maintenance began.
func (s *Service) syncMaintenance(ctx context.Context, tx pgx.Tx, ids []int64) error {
	now := time.Now()
	wins, err := s.q.MaintenanceLiveForNodes(ctx, tx, dbsqlc.MaintenanceLiveForNodesParams{AllNodes: ids == nil, NodeIds: ids})
	if err != nil {
		return fmt.Errorf("read maintenance windows: %w", err)
	}
	byNode := map[int64][]Window{}
	for _, w := range wins {
		byNode[w.NodeID] = append(byNode[w.NodeID], Window{Start: w.StartsAt, End: w.EndsAt, Reason: w.Reason})
	}
	watch := slices.Clone(ids)
	for id := range byNode {
		watch = append(watch, id)
	}
	cur, err := s.q.MaintenanceNodesMirrored(ctx, tx, watch)
	if err != nil {
		return err
	}
	var p dbsqlc.NodeMaintenanceMirrorParams
	var began []int64
	for _, n := range cur {
		until, reason := InForce(byNode[n.ID], now)
		switch {
		case until != nil:
			if n.MaintenanceUntil != nil && n.MaintenanceUntil.Equal(*until) && n.MaintenanceReason == reason {
				continue
			}
			if n.MaintenanceUntil == nil || !n.MaintenanceUntil.After(now) {
				began = append(began, n.ID)
			}
		case n.MaintenanceUntil != nil && n.MaintenanceUntil.After(now):
			// No window in force any more (cancelled): maintenance ends now.
			until, reason = &now, n.MaintenanceReason
		default:
			continue
		}
		p.Ids = append(p.Ids, n.ID)
		p.Untils = append(p.Untils, *until)
		p.Reasons = append(p.Reasons, reason)
	}
	if len(p.Ids) == 0 {
		return nil
	}
	if err := s.q.NodeMaintenanceMirror(ctx, tx, p); err != nil {
		return fmt.Errorf("mirror maintenance: %w", err)
	}
	for _, id := range began {
		n, err := s.q.NodeGet(ctx, tx, id)
		if err != nil {
			return err
		}
		msg := fmt.Sprintf("Node %s is in maintenance until %s: %s (no alerts, no automatic failover)",
			n.Name, n.MaintenanceUntil.UTC().Format(time.RFC3339), n.MaintenanceReason)
		if err := s.event(ctx, tx, &n, "maintenance", "info", "maintenance", msg); err != nil {
			return err
		}
	}
	return nil
}

// Window is one maintenance window, for InForce.
type Window struct {
	Start, End time.Time
	Reason     string
}

// InForce returns when the maintenance in force at now ends, following
// windows that overlap or touch it, and the reason of the window that
// started last; nil when no window covers now.
func InForce(ws []Window, now time.Time) (*time.Time, string) {
	var until time.Time
	var reason string
	var started time.Time
	for _, w := range ws {
		if !w.Start.After(now) && w.End.After(now) {
			if w.End.After(until) {
				until = w.End
			}
			if reason == "" || w.Start.After(started) {
				reason, started = w.Reason, w.Start
			}
		}
	}
	if until.IsZero() {
		return nil, ""
	}
	for grew := true; grew; {
		grew = false
		for _, w := range ws {
			if !w.Start.After(until) && w.End.After(until) {
				until, grew = w.End, true
			}
		}
	}
	return &until, reason
}

func fmtSpan(start, end time.Time) string {
	const layout = "2006-01-02 15:04 MST"
	return start.UTC().Format(layout) + " to " + end.UTC().Format(layout)
}
