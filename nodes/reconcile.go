package nodes

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"slices"
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
// not the rest of its live work, and those items are activated. On a busy
// node a report often lags by the deliveries still on their way: when the
// report with this instance's latest placements on the node added is the
// node's work (and shows none of them), it matches too, and those stay
// assigned.
func (s *Service) Reconcile(ctx context.Context, nodeID int64, running []agentproto.Running) (bool, error) {
	r := s.ReconcileReports(ctx, []Report{{NodeID: nodeID, Running: running}})
	return r[0].Changed, r[0].Err
}

// Report is what one node's agent runs, as its heartbeat said.
type Report struct {
	NodeID  int64
	Running []agentproto.Running
}

// ReconcileResult is what reconciling one report did: whether it changed
// anything, or why it could not.
type ReconcileResult struct {
	Changed bool
	Err     error
}

// ReconcileReports reconciles several nodes' reports, as Reconcile does
// one, with one read of all their nodes' digests: a thousand agents'
// reports, ten a second each, cost a query every flush instead of a
// hundred a second. Only a report that matches no digest reads its node's
// work. The results are in the reports' order; a node reported twice is
// reconciled with its last report.
func (s *Service) ReconcileReports(ctx context.Context, reports []Report) []ReconcileResult {
	last := make(map[int64]int, len(reports))
	for i, r := range reports {
		last[r.NodeID] = i
	}
	lags := make([][]lag, len(reports))
	var p dbsqlc.NodeLiveDigestMatchBatchParams
	for i, r := range reports {
		if last[r.NodeID] != i {
			continue
		}
		digest := runningDigest(r.Running)
		lags[i] = s.recent.unapplied(r.NodeID)
		p.NodeIds = append(p.NodeIds, r.NodeID)
		p.Digests = append(p.Digests, digest)
		p.Ords = append(p.Ords, 1)
		for k, l := range lags[i] {
			p.NodeIds = append(p.NodeIds, r.NodeID)
			p.Digests = append(p.Digests, digest^l.digest)
			p.Ords = append(p.Ords, int32(k+2))
		}
	}
	res := make([]ReconcileResult, len(reports))
	rows, err := s.q.NodeLiveDigestMatchBatch(ctx, s.pool, p)
	if err != nil {
		for i := range res {
			res[i].Err = db.Translate(err)
		}
		return res
	}
	matches := make(map[int64]dbsqlc.NodeLiveDigestMatchBatchRow, len(rows))
	for _, m := range rows {
		matches[m.NodeID] = m
	}
	for i, r := range reports {
		if last[r.NodeID] == i {
			res[i].Changed, res[i].Err = s.reconcileOne(ctx, r.NodeID, r.Running, lags[i], matches[r.NodeID])
		}
	}
	for i, r := range reports {
		res[i] = res[last[r.NodeID]]
	}
	return res
}

// reconcileOne settles one report given what the digests said (Matched
// 0: none matched, 1: the report's own, k: the report with the first k-1
// of lags added).
func (s *Service) reconcileOne(ctx context.Context, nodeID int64, running []agentproto.Running, lags []lag, match dbsqlc.NodeLiveDigestMatchBatchRow) (bool, error) {
	var pending []int64
	if match.Matched > 1 {
		pending = lags[match.Matched-2].ids
		if slices.ContainsFunc(running, func(r agentproto.Running) bool { return slices.Contains(pending, r.ID) }) {
			match.Matched = 0 // it shows some of them: compare
		}
	}
	if match.Matched > 0 {
		result := "same"
		if match.Matched > 1 {
			result = "behind"
		}
		metrics.Reconciles.WithLabelValues(result).Inc()
		var ids, epochs []int64
		for i, id := range match.AssignedIds {
			if !slices.Contains(pending, id) {
				ids = append(ids, id)
				epochs = append(epochs, match.AssignedEpochs[i])
			}
		}
		if len(ids) == 0 {
			return false, nil
		}
		n, err := s.q.WorkActivateRunning(ctx, s.pool, dbsqlc.WorkActivateRunningParams{Ids: ids, Epochs: epochs, NodeID: &nodeID})
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
