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

// AlertFilter selects alerts for the API; Cursor is the last id of the
// previous page (0 for the first).
type AlertFilter struct {
	Node, State, Type string
	Cursor            int64
	Limit             int32
}

// ListAlerts returns one page of the alert outbox, newest first.
func (s *Service) ListAlerts(ctx context.Context, f AlertFilter) ([]dbsqlc.Alert, error) {
	return s.q.AlertPage(ctx, s.pool, dbsqlc.AlertPageParams{
		Cursor: f.Cursor, NodeName: f.Node, State: f.State, Type: f.Type, Lim: pageLimit(f.Limit),
	})
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
func (s *Service) AckAlert(ctx context.Context, actor Actor, id int64, note string) (dbsqlc.Alert, error) {
	note = strings.TrimSpace(note)
	switch {
	case note == "":
		return dbsqlc.Alert{}, problem.FieldErrors{"note": "say what is being done about it"}
	case len(note) > 1000:
		return dbsqlc.Alert{}, problem.FieldErrors{"note": "note must be at most 1000 characters"}
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
	return a, err
}

// Ack is who acknowledged a node's down alert, and why.
type Ack struct {
	By   string
	Note string
	At   time.Time
}

// AckSince returns the acknowledgement of a node's down alerts queued
// since it went down, if any.
func (s *Service) AckSince(ctx context.Context, q dbsqlc.DBTX, nodeName string, since time.Time) (Ack, bool, error) {
	row, err := s.q.AlertAckSince(ctx, q, dbsqlc.AlertAckSinceParams{NodeName: nodeName, Since: since})
	if db.IsNotFound(err) {
		return Ack{}, false, nil
	}
	if err != nil || row.AckedAt == nil {
		return Ack{}, false, err
	}
	return Ack{By: row.AckedBy, Note: row.AckNote, At: *row.AckedAt}, true, nil
}

// DownAlert returns the newest down alert (or reminder) queued since the
// node went down, or nil when the node is not down or none was queued
// (a disabled node or one in maintenance raises none).
func (s *Service) DownAlert(ctx context.Context, n dbsqlc.Node) (*dbsqlc.Alert, error) {
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
	return &a, nil
}
