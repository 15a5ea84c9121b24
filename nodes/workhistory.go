package nodes

import (
	"context"
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
)

// WorkWithHistory returns a work item by ref and every change of its
// state, node or epoch, oldest first.
func (s *Service) WorkWithHistory(ctx context.Context, ref string) (dbsqlc.WorkGetByRefRow, []dbsqlc.WorkHistory, error) {
	w, err := s.GetWork(ctx, ref)
	if err != nil {
		return w, nil, err
	}
	h, err := s.q.WorkHistoryList(ctx, s.pool, dbsqlc.WorkHistoryListParams{WorkID: w.ID, Lim: 1000})
	return w, h, err
}

// EventQuery selects events for the API. Zero fields match everything;
// Since and Until bound the time (use the zero time for open ends).
type EventQuery struct {
	Node, Type, Severity, Actor, Q string
	Since, Until                   time.Time
	Cursor                         int64
	Limit                          int32
}

// PageEvents returns one page of events, newest first, after the cursor.
func (s *Service) PageEvents(ctx context.Context, f EventQuery) ([]dbsqlc.Event, error) {
	return s.q.EventFind(ctx, s.pool, dbsqlc.EventFindParams{
		Cursor: f.Cursor, NodeName: f.Node, Type: f.Type, Severity: f.Severity, Actor: f.Actor,
		Since: f.Since, Until: f.Until, Q: f.Q, Lim: pageLimit(f.Limit),
	})
}

// AuditQuery selects audit rows for the API. Action matches the action
// or its sub-actions ("node" matches "node.add").
type AuditQuery struct {
	Actor, Action, Target, Result, Q string
	Since, Until                     time.Time
	Cursor                           int64
	Limit                            int32
}

// PageAudit returns one page of the audit log, newest first, after the
// cursor.
func (s *Service) PageAudit(ctx context.Context, f AuditQuery) ([]dbsqlc.AuditLog, error) {
	return s.q.AuditFind(ctx, s.pool, dbsqlc.AuditFindParams{
		Cursor: f.Cursor, Actor: f.Actor, Action: f.Action, Target: f.Target, Result: f.Result,
		Since: f.Since, Until: f.Until, Q: f.Q, Lim: pageLimit(f.Limit),
	})
}
