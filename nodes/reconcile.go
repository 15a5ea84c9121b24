package nodes

import (
	"context"

	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/agentproto"
)

// Reconcile compares what an agent runs with the node's desired set. Work
// the agent runs at the current epoch that is still recorded as assigned
// becomes active (its ack was lost). Any other difference — the agent runs
// work that moved or ended, or no longer runs work recorded as active —
// bumps the node's assignment version, so the agent's long-poll hands it
// the desired set again and it converges. It reports whether it changed
// anything.
func (s *Service) Reconcile(ctx context.Context, nodeID int64, running []agentproto.Running) (bool, error) {
	desired, err := s.q.WorkDesiredForNode(ctx, s.pool, &nodeID)
	if err != nil {
		return false, err
	}
	want := make(map[int64]dbsqlc.WorkDesiredForNodeRow, len(desired))
	for _, d := range desired {
		want[d.ID] = d
	}
	var ids, epochs []int64
	mismatch := false
	seen := make(map[int64]bool, len(running))
	for _, r := range running {
		seen[r.ID] = true
		d, ok := want[r.ID]
		switch {
		case !ok || d.Epoch != r.Epoch:
			mismatch = true
		case d.State == WorkAssigned:
			ids = append(ids, r.ID)
			epochs = append(epochs, r.Epoch)
		}
	}
	for _, d := range desired {
		if d.State == WorkActive && !seen[d.ID] {
			mismatch = true
		}
	}
	changed := false
	if len(ids) > 0 {
		n, err := s.q.WorkActivateRunning(ctx, s.pool, dbsqlc.WorkActivateRunningParams{Ids: ids, Epochs: epochs, NodeID: &nodeID})
		if err != nil {
			return false, err
		}
		changed = n > 0
	}
	if mismatch {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			return changed, err
		}
		defer tx.Rollback(ctx)
		if err := s.q.NodeRequestResync(ctx, tx, nodeID); err != nil {
			return changed, err
		}
		if err := s.notify(ctx, tx, nodeID); err != nil {
			return changed, err
		}
		if err := tx.Commit(ctx); err != nil {
			return changed, err
		}
		changed = true
	}
	return changed, nil
}
