package nodes

import (
	"context"

	"github.com/callplane/callplane/db/dbsqlc"
)

// ListEvents returns the newest events, for one node when node is set; q
// matches the message, type or node name.
func (s *Service) ListEvents(ctx context.Context, node, q string, limit int32) ([]Event, error) {
	rows, err := s.q.EventList(ctx, s.pool, dbsqlc.EventListParams{NodeName: node, Q: q, Lim: limit})
	if err != nil {
		return nil, err
	}
	return fromRows(rows, eventFromRow), nil
}

// Audit records a successful change made outside the domain's own
// transactions, such as work placed or ended by a person in the portal.
// (Work placed by scripts through the API is recorded by its work row and
// events, not one audit row per call.)
func (s *Service) Audit(ctx context.Context, actor Actor, action, target, detail string) {
	if err := s.audit(ctx, s.pool, actor, action, target, detail); err != nil {
		s.log.Error("write audit row", "action", action, "err", err)
	}
}
