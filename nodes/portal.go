package nodes

import (
	"context"

	"github.com/callplane/callplane/db/dbsqlc"
)

// Read-only views the portal shows. They add no rules of their own: each
// returns rows of one query, so pages stay thin and the SQL stays in
// db/queries.

// KindSummary counts nodes per kind by health and admin state, with the
// enabled capacity and the load.
func (s *Service) KindSummary(ctx context.Context) ([]dbsqlc.NodeKindSummaryRow, error) {
	return s.q.NodeKindSummary(ctx, s.pool)
}

// WorkCounts counts live work (not ended) per work kind and state.
func (s *Service) WorkCounts(ctx context.Context) ([]dbsqlc.WorkCountsRow, error) {
	return s.q.WorkCounts(ctx, s.pool)
}

// NodeWorkCounts counts the live work a node carries per work kind.
func (s *Service) NodeWorkCounts(ctx context.Context, nodeID int64) ([]dbsqlc.WorkCountsByNodeRow, error) {
	return s.q.WorkCountsByNode(ctx, s.pool, &nodeID)
}

// ProbeHistory returns a node's newest probe results.
func (s *Service) ProbeHistory(ctx context.Context, nodeID int64, limit int32) ([]dbsqlc.ProbeResult, error) {
	return s.q.ProbeResultList(ctx, s.pool, dbsqlc.ProbeResultListParams{NodeID: nodeID, Lim: limit})
}
