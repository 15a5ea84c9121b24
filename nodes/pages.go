package nodes

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// The long tables, one page at a time. The portal's tables (/events,
// /audit, /work) and the API's history (GET /api/v1/events, /audit) page
// the same way, through the same queries: a sort column and direction and
// a keyset cursor, the last row's sort key and id. The API always sorts
// by time, newest first, so its cursor is the last id alone.

// Page is where a page of a long table starts: the sort column and
// direction, and the cursor (the previous page's last sort key and id;
// AfterID 0 is the first page).
type Page struct {
	Sort     string
	Desc     bool
	AfterKey string
	AfterID  int64
	Limit    int32
}

// NewestFirst is the page of a table sorted by time, newest first, after
// the row with id cursor (0: the first page): the API's paging.
func NewestFirst(cursor int64, limit int32) Page {
	return Page{Sort: "time", Desc: true, AfterID: cursor, Limit: limit}
}

func (p Page) limit() int32 {
	if p.Limit <= 0 || p.Limit > 1000 {
		return 50
	}
	return p.Limit
}

// timeBound is a time filter's bound for the queries: nil (open) for the
// zero time.
func timeBound(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// Event is an entry of the event log: what happened to the cluster, for
// people.
type Event struct {
	ID       int64
	At       time.Time
	NodeID   *int64
	NodeName string
	Type     string
	Severity string
	Message  string
	Actor    string
	sortKey  string
}

// Cursor is the event's place in the page it was read in: its sort key
// and id.
func (e Event) Cursor() (string, int64) { return e.sortKey, e.ID }

func eventFromRow(r dbsqlc.Event) Event {
	return Event{ID: r.ID, At: r.At, NodeID: r.NodeID, NodeName: r.NodeName, Type: r.Type, Severity: r.Severity, Message: r.Message, Actor: r.Actor}
}

// EventFilter narrows the events; empty fields match everything.
type EventFilter struct {
	Node, Type, Severity, Actor string
	// Q matches the message, type or node name (the portal's search);
	// Message matches the message alone (the API's q).
	Q, Message string
	// Since and Until bound the time; the zero time leaves an end open.
	Since, Until time.Time
}

// EventSorts are the columns the events table sorts by ("time" is the
// default, newest first).
var EventSorts = []string{"time", "severity", "node", "type", "actor"}

// Severities are the event severities.
var Severities = []string{"info", "warning", "critical"}

// EventPage returns one page of events; a bad severity is a problem.FieldErrors.
func (s *Service) EventPage(ctx context.Context, f EventFilter, p Page) ([]Event, error) {
	if f.Severity != "" && !slices.Contains(Severities, f.Severity) {
		return nil, problem.FieldErrors{"severity": "severity must be one of " + strings.Join(Severities, ", ")}
	}
	rows, err := s.q.EventPage(ctx, s.pool, dbsqlc.EventPageParams{
		Sort: p.Sort, NodeName: f.Node, Type: f.Type, Severity: f.Severity, Actor: f.Actor,
		Since: timeBound(f.Since), Until: timeBound(f.Until), Q: f.Q, Message: f.Message,
		AfterID: p.AfterID, Descending: p.Desc, AfterKey: p.AfterKey, Lim: p.limit(),
	})
	if err != nil {
		return nil, err
	}
	out := make([]Event, len(rows))
	for i, r := range rows {
		out[i] = Event{ID: r.ID, At: r.At, NodeID: r.NodeID, NodeName: r.NodeName, Type: r.Type, Severity: r.Severity,
			Message: r.Message, Actor: r.Actor, sortKey: r.SortKey}
	}
	return out, nil
}

// AuditEntry is a row of the audit log: who changed what, from where,
// and whether it was refused.
type AuditEntry struct {
	ID         int64
	At         time.Time
	Actor      string
	Action     string
	Target     string
	Result     string
	SourceAddr string
	Detail     string
	sortKey    string
}

// Cursor is the entry's place in the page it was read in.
func (a AuditEntry) Cursor() (string, int64) { return a.sortKey, a.ID }

// AuditFilter narrows the audit log; empty fields match everything.
// Action matches the action or its sub-actions ("node" matches
// "node.add").
type AuditFilter struct {
	Actor, Action, Target, Result string
	// Q matches the actor, action or target (the portal's search);
	// Detail matches the detail or target (the API's q).
	Q, Detail string
	// Since and Until bound the time; the zero time leaves an end open.
	Since, Until time.Time
}

// AuditSorts are the columns the audit table sorts by.
var AuditSorts = []string{"time", "actor", "action", "target", "result", "source"}

// AuditResults are the results an audit row records.
var AuditResults = []string{"ok", "error", "throttled"}

// AuditPage returns one page of the audit log; a bad result is a
// problem.FieldErrors.
func (s *Service) AuditPage(ctx context.Context, f AuditFilter, p Page) ([]AuditEntry, error) {
	if f.Result != "" && !slices.Contains(AuditResults, f.Result) {
		return nil, problem.FieldErrors{"result": "result must be one of " + strings.Join(AuditResults, ", ")}
	}
	rows, err := s.q.AuditPage(ctx, s.pool, dbsqlc.AuditPageParams{
		Sort: p.Sort, Actor: f.Actor, Action: f.Action, Target: f.Target, Result: f.Result,
		Since: timeBound(f.Since), Until: timeBound(f.Until), Q: f.Q, Detail: f.Detail,
		AfterID: p.AfterID, Descending: p.Desc, AfterKey: p.AfterKey, Lim: p.limit(),
	})
	if err != nil {
		return nil, err
	}
	out := make([]AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = AuditEntry{ID: r.ID, At: r.At, Actor: r.Actor, Action: r.Action, Target: r.Target, Result: r.Result,
			SourceAddr: r.SourceAddr, Detail: r.Detail, sortKey: r.SortKey}
	}
	return out, nil
}

// WorkSorts are the columns the work table sorts by.
var WorkSorts = []string{"time", "ref", "kind", "cost", "state", "node", "epoch", "updated"}

// WorkPage returns one page of work items; an unknown node name is
// ErrNotFound and a bad kind or state a problem.FieldErrors.
func (s *Service) WorkPage(ctx context.Context, f WorkFilter, p Page) ([]Work, error) {
	nodeID, err := s.workFilterNode(ctx, f)
	if err != nil {
		return nil, err
	}
	rows, err := s.q.WorkPage(ctx, s.pool, dbsqlc.WorkPageParams{
		Sort: p.Sort, NodeID: nodeID, Kind: f.Kind, State: f.State, Q: f.Q,
		AfterID: p.AfterID, Descending: p.Desc, AfterKey: p.AfterKey, Lim: p.limit(),
	})
	if err != nil {
		return nil, err
	}
	out := make([]Work, len(rows))
	for i, r := range rows {
		out[i] = Work{ID: r.ID, Ref: r.Ref, Kind: r.Kind, Cost: r.Cost, State: r.State, NodeID: r.NodeID, Epoch: r.Epoch,
			CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, EndedAt: r.EndedAt, LastError: r.LastError,
			NodeName: r.NodeName, sortKey: r.SortKey}
	}
	return out, nil
}
