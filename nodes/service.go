package nodes

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// AssignChannel is the Postgres channel that wakes assignment long-polls.
// Its payload is a comma-separated list of node ids, or "*" for all; a
// placement group's ends with ",@" and the version it drew.
const AssignChannel = "callplane_assign"

// AccessChannel carries the ids of nodes whose agents' access changed
// (disabled, removed, re-enrolled, asked to rotate), so every instance
// forgets its cached credential checks for them at once.
const AccessChannel = "callplane_access"

// Service is the cluster domain's entry point.
type Service struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	q      *dbsqlc.Queries
	creds  credCache
	placer *groupCommit[placeUnit, unitOutcome]
	acker  *groupCommit[nodeAcks, ackOutcome]
	deltas [deltaReaders]*groupCommit[deltaReq, deltaOutcome]
	recent recentDeltas
}

// NewService returns a Service on pool.
func NewService(pool *pgxpool.Pool, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{pool: pool, log: log, q: db.Q}
	s.placer = newPlacer(s)
	s.acker = newAcker(s)
	for i := range s.deltas {
		s.deltas[i] = newDeltaReader(s)
	}
	return s
}

// audit writes an audit row in the caller's transaction.
func (s *Service) audit(ctx context.Context, tx dbsqlc.DBTX, actor Actor, action, target, detail string) error {
	return s.q.AuditInsert(ctx, tx, dbsqlc.AuditInsertParams{
		Actor: actor.Name, Action: action, Target: target, Result: "ok", SourceAddr: actor.Addr, Detail: detail,
	})
}

// AuditFailure records a refused change outside any transaction.
func (s *Service) AuditFailure(ctx context.Context, actor Actor, action, target string, cause error) {
	err := s.q.AuditInsert(ctx, s.pool, dbsqlc.AuditInsertParams{
		Actor: actor.Name, Action: action, Target: target, Result: "error", SourceAddr: actor.Addr, Detail: cause.Error(),
	})
	if err != nil {
		s.log.Error("write audit row", "action", action, "err", err)
	}
}

// event writes an event row in the caller's transaction.
func (s *Service) event(ctx context.Context, tx dbsqlc.DBTX, node *dbsqlc.Node, typ, severity, actor, msg string) error {
	p := dbsqlc.EventInsertParams{Type: typ, Severity: severity, Message: msg, Actor: actor}
	if node != nil {
		p.NodeID = &node.ID
		p.NodeName = node.Name
	}
	return s.q.EventInsert(ctx, tx, p)
}

// notify wakes the long-polls of the given nodes when tx commits: one
// notification per transaction, whatever the number of rows.
func (s *Service) notify(ctx context.Context, tx dbsqlc.DBTX, nodeIDs ...int64) error {
	payload := notifyPayload(nodeIDs)
	if payload == "" {
		return nil
	}
	return s.q.Notify(ctx, tx, dbsqlc.NotifyParams{Channel: AssignChannel, Payload: payload})
}

// notifyAccess tells every instance, when tx commits, that a node's
// agent access changed.
func (s *Service) notifyAccess(ctx context.Context, tx dbsqlc.DBTX, nodeID int64) error {
	return s.q.Notify(ctx, tx, dbsqlc.NotifyParams{Channel: AccessChannel, Payload: strconv.FormatInt(nodeID, 10)})
}

// inTx runs fn in a transaction under the one retry policy (db.InTxRetry):
// when Postgres breaks a deadlock or a serialization conflict by rolling
// the transaction back, fn runs again (it re-reads everything it decides
// on), so an administrator's disable never fails because a placement
// raced it.
func (s *Service) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return db.InTxRetry(ctx, s.pool, fn)
}

// GetNode returns a node by name.
func (s *Service) GetNode(ctx context.Context, name string) (Node, error) {
	n, err := s.q.NodeGetByName(ctx, s.pool, name)
	if err != nil {
		return Node{}, fmt.Errorf("node %q: %w", name, db.Translate(err))
	}
	return nodeFromRow(n), nil
}

// NodeFilter selects nodes; empty fields match all. Q matches the name,
// address or region.
type NodeFilter struct {
	Kind, AdminState, Health, Q string
}

// ListNodes returns the nodes matching the filter, by kind and name.
func (s *Service) ListNodes(ctx context.Context, f NodeFilter) ([]Node, error) {
	list, _, err := s.ListNodesPage(ctx, f, 0, math.MaxInt32)
	return list, err
}

// ListNodesPage returns a page of the nodes matching the filter, by kind
// and name (at most limit, after the first offset), and how many match in
// all. An offset past the last node gives the last page.
func (s *Service) ListNodesPage(ctx context.Context, f NodeFilter, offset, limit int) ([]Node, int, error) {
	p := dbsqlc.NodeListFilteredParams{Kind: f.Kind, AdminState: f.AdminState, Health: f.Health, Q: f.Q,
		Off: int32(min(max(offset, 0), math.MaxInt32)), Lim: int32(min(max(limit, 1), math.MaxInt32))}
	rows, err := s.q.NodeListFiltered(ctx, s.pool, p)
	if err == nil && len(rows) == 0 && p.Off > 0 {
		// Past the last node: the first row brings the count, then the
		// last page is read.
		var first []dbsqlc.NodeListFilteredRow
		first, err = s.q.NodeListFiltered(ctx, s.pool, dbsqlc.NodeListFilteredParams{Kind: p.Kind, AdminState: p.AdminState, Health: p.Health, Q: p.Q, Lim: 1})
		if err != nil || len(first) == 0 {
			return nil, 0, err
		}
		p.Off = (first[0].Total - 1) / p.Lim * p.Lim
		rows, err = s.q.NodeListFiltered(ctx, s.pool, p)
	}
	if err != nil || len(rows) == 0 {
		return nil, 0, err
	}
	return fromRows(rows, func(r dbsqlc.NodeListFilteredRow) Node { return nodeFromRow(r.Node) }), int(rows[0].Total), nil
}
