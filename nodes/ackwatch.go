package nodes

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/dbsqlc"
)

// DefaultAckTimeout is how long an assignment may wait for its node's
// acknowledgement before it is placed again. An agent long-polls and acks
// within a second or two, and its heartbeats report what it runs (which
// acknowledges too), so 30 s means the node has not taken the work up.
const DefaultAckTimeout = 30 * time.Second

// ActorAckWatch is who re-places unacknowledged work.
var ActorAckWatch = Actor{Name: "ack-watch", Addr: "local"}

// unackedReplaced counts assignments re-placed for want of an ack since
// the process started.
var unackedReplaced atomic.Int64

// UnackedReplaced is how many assignments this process re-placed because
// their node did not acknowledge them in time.
func UnackedReplaced() int64 { return unackedReplaced.Load() }

// ReplaceUnacked places again, on another eligible node, every assignment
// that has waited longer than bound for its node's acknowledgement (work
// that fits nowhere else waits unplaced). Each node's move is one
// transaction with one event naming the cause. Run it on the leader.
func (s *Service) ReplaceUnacked(ctx context.Context, bound time.Duration) (int, error) {
	nodeIDs, err := s.q.WorkUnackedNodes(ctx, s.pool, bound.Seconds())
	if err != nil {
		return 0, fmt.Errorf("find unacknowledged work: %w", err)
	}
	total := 0
	for _, id := range nodeIDs {
		var mr MoveResult
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			node, err := s.q.NodeGetForUpdate(ctx, tx, id)
			if err != nil {
				return err
			}
			// Read again under the node's lock: an ack may have come.
			rows, err := s.q.WorkUnackedOnNodeForUpdate(ctx, tx, dbsqlc.WorkUnackedOnNodeForUpdateParams{NodeID: &id, OlderThanSeconds: bound.Seconds()})
			if err != nil || len(rows) == 0 {
				return err
			}
			mr, err = s.moveUnacked(ctx, tx, &node, rows, fmt.Sprintf("not acknowledged by the node within %s", bound))
			return err
		})
		if err != nil {
			return total, fmt.Errorf("re-place unacknowledged work of node %d: %w", id, err)
		}
		n := mr.Moved + mr.Unplaced
		if n > 0 {
			unackedReplaced.Add(int64(n))
			s.log.Warn("assignments not acknowledged in time were placed again", "node_id", id, "moved", mr.Moved, "unplaced", mr.Unplaced, "bound", bound)
		}
		total += n
	}
	return total, nil
}

// moveUnacked moves the unacknowledged items off node with the move every
// other path uses; the node's other work stays.
func (s *Service) moveUnacked(ctx context.Context, tx pgx.Tx, node *dbsqlc.Node, rows []dbsqlc.WorkUnackedOnNodeForUpdateRow, cause string) (MoveResult, error) {
	unacked := make(map[int64]bool, len(rows))
	for _, r := range rows {
		unacked[r.ID] = true
	}
	live, err := s.liveWork(ctx, tx, node.ID)
	if err != nil {
		return MoveResult{}, err
	}
	var items, stays []liveItem
	for _, it := range live {
		if unacked[it.id] {
			items = append(items, it)
		} else {
			stays = append(stays, it)
		}
	}
	return s.moveOff(ctx, tx, node, items, stays, cause, ActorAckWatch)
}

// WatchAcks re-places unacknowledged work every interval until ctx ends
// (the leader's loop: run it while leading).
func (s *Service) WatchAcks(ctx context.Context, bound, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.ReplaceUnacked(ctx, bound); err != nil && ctx.Err() == nil {
			s.log.Error("ack watch", "err", err)
		}
	}
}
