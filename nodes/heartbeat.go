package nodes

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/safetext"
)

// MaxAgentVersion is the most bytes of an agent's version string kept.
const MaxAgentVersion = 64

type heartbeat struct {
	at      time.Time
	load    int32
	version string
	// skipped: a flush found the node locked by another transaction and
	// left its beat for the next, which waits for the lock.
	skipped bool
}

// Heartbeats collects agent heartbeats in memory and writes them to
// Postgres in one statement per flush, so a thousand agents beating once
// a second cost a few writes a second, not a thousand.
type Heartbeats struct {
	svc     *Service
	every   time.Duration
	mu      sync.Mutex
	pending map[int64]heartbeat
	flushed chan struct{}
}

// NewHeartbeats returns a batcher flushing every interval.
func (s *Service) NewHeartbeats(every time.Duration) *Heartbeats {
	return &Heartbeats{svc: s, every: every, pending: map[int64]heartbeat{}, flushed: make(chan struct{}, 1)}
}

// Record notes a heartbeat; the next flush writes it.
func (h *Heartbeats) Record(nodeID int64, load int32, version string) {
	h.mu.Lock()
	h.pending[nodeID] = heartbeat{at: time.Now(), load: load, version: safetext.Sanitize(version, MaxAgentVersion),
		skipped: h.pending[nodeID].skipped}
	h.mu.Unlock()
}

// Run flushes until ctx ends, then flushes once more.
func (h *Heartbeats) Run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			h.Flush(fctx)
			cancel()
			return
		case <-t.C:
			h.Flush(ctx)
		}
	}
}

func heartbeatParams(batch map[int64]heartbeat) dbsqlc.NodeHeartbeatBatchParams {
	p := dbsqlc.NodeHeartbeatBatchParams{}
	for id, b := range batch {
		p.Ids = append(p.Ids, id)
		p.Ats = append(p.Ats, b.at)
		p.Loads = append(p.Loads, b.load)
		p.Versions = append(p.Versions, b.version)
	}
	return p
}

// write writes the beats, waiting for nodes another transaction holds.
func (h *Heartbeats) write(ctx context.Context, batch map[int64]heartbeat) error {
	return h.svc.q.NodeHeartbeatBatch(ctx, h.svc.pool, heartbeatParams(batch))
}

// writeUnlocked writes the beats of the nodes no other transaction holds
// and returns the others, marked skipped.
func (h *Heartbeats) writeUnlocked(ctx context.Context, batch map[int64]heartbeat) (map[int64]heartbeat, error) {
	written, err := h.svc.q.NodeHeartbeatBatchSkipLocked(ctx, h.svc.pool, dbsqlc.NodeHeartbeatBatchSkipLockedParams(heartbeatParams(batch)))
	if err != nil {
		return nil, err
	}
	left := maps.Clone(batch)
	for _, id := range written {
		delete(left, id)
	}
	for id, b := range left {
		b.skipped = true
		left[id] = b
	}
	return left, nil
}

// requeue keeps beats for the next flush unless a newer beat arrived, so
// one failed write does not make live nodes look silent.
func (h *Heartbeats) requeue(batch map[int64]heartbeat) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, b := range batch {
		cur, newer := h.pending[id]
		switch {
		case !newer:
			h.pending[id] = b
		case b.skipped:
			cur.skipped = true
			h.pending[id] = cur
		}
	}
}

// Flush writes the pending heartbeats now.
func (h *Heartbeats) Flush(ctx context.Context) {
	h.mu.Lock()
	batch := h.pending
	h.pending = make(map[int64]heartbeat, len(batch))
	h.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	// A heartbeat never changes health: the checker brings a node up
	// when its probe and its agent agree.
	//
	// A beat does not wait for a node another transaction holds (a
	// placement group, to its commit): it is written at the next flush,
	// which waits then, so a beat is late by one flush at most.
	fresh := map[int64]heartbeat{}
	for id, b := range batch {
		if !b.skipped {
			fresh[id] = b
			delete(batch, id)
		}
	}
	if len(fresh) > 0 {
		left, err := h.writeUnlocked(ctx, fresh)
		switch {
		case err == nil:
			h.requeue(left)
		case db.Unreachable(err) || ctx.Err() != nil:
			maps.Copy(batch, fresh)
			h.svc.log.Error("write heartbeats; retrying at the next flush", "nodes", len(batch), "err", err)
			h.requeue(batch)
			return
		default:
			maps.Copy(batch, fresh) // refused on its data: see below
		}
	}
	if len(batch) == 0 {
		h.signalFlushed()
		return
	}
	if err := h.write(ctx, batch); err != nil {
		if db.Unreachable(err) || ctx.Err() != nil {
			h.svc.log.Error("write heartbeats; retrying at the next flush", "nodes", len(batch), "err", err)
			h.requeue(batch)
			return
		}
		// The statement failed on its data: write the beats one by one,
		// so one bad row costs only its own node a beat, never every
		// node its freshness.
		h.svc.log.Warn("heartbeat batch refused; writing each node's beat alone", "nodes", len(batch), "err", err)
		for id, b := range batch {
			switch err := h.write(ctx, map[int64]heartbeat{id: b}); {
			case err == nil:
			case db.Unreachable(err) || ctx.Err() != nil:
				h.requeue(map[int64]heartbeat{id: b})
			default:
				h.svc.log.Error("heartbeat dropped: the database refused it", "node_id", id, "err", err)
			}
		}
	}
	h.signalFlushed()
}

func (h *Heartbeats) signalFlushed() {
	select {
	case h.flushed <- struct{}{}:
	default:
	}
}
