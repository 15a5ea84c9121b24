package nodes

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"strconv"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/server/metrics"
)

// Reconcile compares what an agent runs with the node's desired set. Work
// the agent runs at the current epoch that is still recorded as assigned
// becomes active (its ack was lost). Any other difference — the agent runs
// work that moved or ended, or no longer runs work recorded as active —
// bumps the node's assignment version, so the agent's long-poll hands it
// the desired set again and it converges. It reports whether it changed
// anything.
//
// Most reports match: when the report's digest is the node's (see
// migration 00020), the node's row and its items still assigned are read,
// not the rest of its live work, and those items are activated.
func (s *Service) Reconcile(ctx context.Context, nodeID int64, running []agentproto.Running) (bool, error) {
	match, err := s.q.NodeLiveDigestMatch(ctx, s.pool, dbsqlc.NodeLiveDigestMatchParams{NodeID: nodeID, Digest: runningDigest(running)})
	if err != nil {
		return false, db.Translate(err)
	}
	if match.Same {
		metrics.Reconciles.WithLabelValues("same").Inc()
		if len(match.AssignedIds) == 0 {
			return false, nil
		}
		n, err := s.q.WorkActivateRunning(ctx, s.pool, dbsqlc.WorkActivateRunningParams{Ids: match.AssignedIds, Epochs: match.AssignedEpochs, NodeID: &nodeID})
		return n > 0, err
	}
	metrics.Reconciles.WithLabelValues("compared").Inc()
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

// workDigest is an item's share of its node's live_digest: the first 64
// bits of the MD5 of "id:epoch", as SQL's work_digest computes it.
func workDigest(id, epoch int64) int64 {
	sum := md5.Sum(strconv.AppendInt(append(strconv.AppendInt(nil, id, 10), ':'), epoch, 10))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// runningDigest is the digest of what an agent runs: the XOR of its
// items' shares, so the order does not matter (an item listed twice
// cancels out, and the digests then differ).
func runningDigest(running []agentproto.Running) int64 {
	var d int64
	for _, r := range running {
		d ^= workDigest(r.ID, r.Epoch)
	}
	return d
}
