package nodes

import (
	"context"
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
)

// Read-only views the portal shows. They add no rules of their own: each
// returns rows of one query, so pages stay thin and the SQL stays in
// db/queries.

// KindSummary counts nodes per kind by health and admin state, with the
// enabled capacity and the load.
func (s *Service) KindSummary(ctx context.Context) ([]KindSummary, error) {
	rows, err := s.q.NodeKindSummary(ctx, s.pool)
	return fromRows(rows, func(r dbsqlc.NodeKindSummaryRow) KindSummary { return KindSummary(r) }), err
}

// KindSummary is the nodes of one kind counted by health and admin
// state, with their enabled capacity and load.
type KindSummary struct {
	Kind     string
	Up       int32
	Suspect  int32
	Down     int32
	Pending  int32
	Disabled int32
	Draining int32
	Capacity int64
	Used     int64
}

// WorkCounts counts live work (not ended) per work kind and state.
func (s *Service) WorkCounts(ctx context.Context) ([]WorkCount, error) {
	rows, err := s.q.WorkCounts(ctx, s.pool)
	return fromRows(rows, func(r dbsqlc.WorkCountsRow) WorkCount { return WorkCount(r) }), err
}

// WorkCount counts the work items of a kind in a state, and their cost.
type WorkCount struct {
	Kind  string
	State string
	N     int64
	Cost  int64
}

// KindCount counts the work items of a kind, and their cost.
type KindCount struct {
	Kind string
	N    int64
	Cost int64
}

// NodeWorkCounts counts the live work a node carries per work kind.
func (s *Service) NodeWorkCounts(ctx context.Context, nodeID int64) ([]KindCount, error) {
	rows, err := s.q.WorkCountsByNode(ctx, s.pool, &nodeID)
	return fromRows(rows, func(r dbsqlc.WorkCountsByNodeRow) KindCount { return KindCount(r) }), err
}

// ProbeHistory returns a node's newest probe results.
func (s *Service) ProbeHistory(ctx context.Context, nodeID int64, limit int32) ([]ProbeResult, error) {
	rows, err := s.q.ProbeResultList(ctx, s.pool, dbsqlc.ProbeResultListParams{NodeID: nodeID, Lim: limit})
	return fromRows(rows, func(r dbsqlc.ProbeResult) ProbeResult {
		return ProbeResult{At: r.At, OK: r.Ok, Latency: time.Duration(r.LatencyUs) * time.Microsecond, Detail: r.Detail}
	}), err
}

// ProbeResult is one probe of a node: when, whether it passed, how long
// it took and what it said.
type ProbeResult struct {
	At      time.Time
	OK      bool
	Latency time.Duration
	Detail  string
}
