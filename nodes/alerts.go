package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// Alert is an alert of the outbox: an email to send about a node's health,
// waiting work, a disruption or a failed work start.
type Alert struct {
	ID            int64
	CreatedAt     time.Time
	Type          string
	NodeName      string
	Payload       []byte
	State         string
	Attempts      int32
	NextAttemptAt time.Time
	LastError     string
	SentAt        *time.Time
	EmailID       string
	SendingSince  *time.Time
	AckedAt       *time.Time
	AckedBy       string
	AckNote       string
}

// alertFromRow converts an alert's database row to an Alert.
func alertFromRow(r dbsqlc.Alert) Alert {
	return Alert{ID: r.ID, CreatedAt: r.CreatedAt, Type: r.Type, NodeName: r.NodeName, Payload: r.Payload, State: r.State,
		Attempts: r.Attempts, NextAttemptAt: r.NextAttemptAt, LastError: r.LastError, SentAt: r.SentAt, EmailID: r.EmailID,
		SendingSince: r.SendingSince, AckedAt: r.AckedAt, AckedBy: r.AckedBy, AckNote: r.AckNote}
}

// Acked reports whether an administrator acknowledged the alert.
func (a Alert) Acked() bool { return a.AckedAt != nil }

// AlertFilter selects alerts for the API; Cursor is the last id of the
// previous page (0 for the first).
type AlertFilter struct {
	Node, State, Type string
	Cursor            int64
	Limit             int32
}

// ListAlerts returns one page of the alert outbox, newest first.
func (s *Service) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	rows, err := s.q.AlertPage(ctx, s.pool, dbsqlc.AlertPageParams{
		Cursor: f.Cursor, NodeName: f.Node, State: f.State, Type: f.Type, Lim: pageLimit(f.Limit),
	})
	return fromRows(rows, alertFromRow), err
}

// pageLimit bounds a page size: 100 by default, 1000 at most.
func pageLimit(n int32) int32 {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}

// ErrNotAcknowledgeable: the alert is not a down alert of a node that is
// still down.
var ErrNotAcknowledgeable = fmt.Errorf("only the down alert of a node that is still down can be acknowledged: %w", ErrConflict)

// AckAlert acknowledges a node's down alert with a note: reminders stop
// until the node recovers, and the recovery email names who acknowledged.
func (s *Service) AckAlert(ctx context.Context, actor Actor, id int64, note string) (Alert, error) {
	note = strings.TrimSpace(note)
	switch {
	case note == "":
		return Alert{}, problem.FieldErrors{"note": "say what is being done about it"}
	case len(note) > 1000:
		return Alert{}, problem.FieldErrors{"note": "note must be at most 1000 characters"}
	}
	var a dbsqlc.Alert
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := s.q.AlertGetForUpdate(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("alert %d: %w", id, db.Translate(err))
		}
		var p struct {
			To string `json:"to"`
		}
		if cur.Type != "health" || json.Unmarshal(cur.Payload, &p) != nil || p.To != HealthDown {
			return ErrNotAcknowledgeable
		}
		if cur.AckedAt != nil {
			return fmt.Errorf("alert %d was acknowledged by %s already: %w", id, cur.AckedBy, ErrConflict)
		}
		n, err := s.q.NodeGetByName(ctx, tx, cur.NodeName)
		if db.IsNotFound(err) || (err == nil && (n.Health != HealthDown || n.HealthChangedAt.After(cur.CreatedAt))) {
			return ErrNotAcknowledgeable
		}
		if err != nil {
			return err
		}
		if a, err = s.q.AlertAck(ctx, tx, dbsqlc.AlertAckParams{ID: id, AckedBy: actor.Name, AckNote: note}); err != nil {
			return err
		}
		if err := s.audit(ctx, tx, actor, "alert.ack", n.Name, fmt.Sprintf("alert %d: %s", id, note)); err != nil {
			return err
		}
		return s.event(ctx, tx, &n, "alert", "info", actor.Name, fmt.Sprintf("Down alert of %s acknowledged by %s: %s", n.Name, actor.Name, note))
	})
	return alertFromRow(a), err
}

// DownAlert returns the newest down alert (or reminder) queued since the
// node went down, or nil when the node is not down or none was queued
// (a disabled node or one in maintenance raises none).
func (s *Service) DownAlert(ctx context.Context, n Node) (*Alert, error) {
	if n.Health != HealthDown {
		return nil, nil
	}
	a, err := s.q.AlertLastDown(ctx, s.pool, dbsqlc.AlertLastDownParams{NodeName: n.Name, Since: n.HealthChangedAt})
	if db.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := alertFromRow(a)
	return &out, nil
}

// AlertTally counts the outbox's alerts of one type in one state, with
// their send attempts and how many an administrator acknowledged.
type AlertTally struct {
	Type, State        string
	N, Attempts, Acked int64
}

// AlertTallies counts the alert outbox by type and state.
func (s *Service) AlertTallies(ctx context.Context) ([]AlertTally, error) {
	rows, err := s.q.AlertTally(ctx, s.pool)
	return fromRows(rows, func(r dbsqlc.AlertTallyRow) AlertTally { return AlertTally(r) }), err
}

// OutboxStatus is the state of the alert outbox, for the settings page.
type OutboxStatus struct {
	Pending, Sent, Failed int64
	// RecentFailed are the newest alerts that failed for good, with
	// their last error; Retrying the pending ones that failed at least once.
	RecentFailed []Alert
	Retrying     []Alert
}

// OutboxStatus returns the state of the alert outbox.
func (s *Service) OutboxStatus(ctx context.Context) (OutboxStatus, error) {
	var o OutboxStatus
	counts, err := s.q.AlertCounts(ctx, s.pool)
	if err != nil {
		return o, err
	}
	for _, c := range counts {
		switch c.State {
		case "pending":
			o.Pending = c.N
		case "sent":
			o.Sent = c.N
		case "failed":
			o.Failed = c.N
		}
	}
	failed, err := s.q.AlertListFailed(ctx, s.pool, 10)
	if err != nil {
		return o, err
	}
	o.RecentFailed = fromRows(failed, alertFromRow)
	retrying, err := s.q.AlertListPendingWithError(ctx, s.pool, 10)
	o.Retrying = fromRows(retrying, alertFromRow)
	return o, err
}
