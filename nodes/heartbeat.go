package nodes

import (
	"context"
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
	h.pending[nodeID] = heartbeat{at: time.Now(), load: load, version: safetext.Sanitize(version, MaxAgentVersion)}
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

func (h *Heartbeats) write(ctx context.Context, batch map[int64]heartbeat) error {
	p := dbsqlc.NodeHeartbeatBatchParams{}
	for id, b := range batch {
		p.Ids = append(p.Ids, id)
		p.Ats = append(p.Ats, b.at)
		p.Loads = append(p.Loads, b.load)
		p.Versions = append(p.Versions, b.version)
	}
	return h.svc.q.NodeHeartbeatBatch(ctx, h.svc.pool, p)
}

// requeue keeps beats for the next flush unless a newer beat arrived, so
// one failed write does not make live nodes look silent.
func (h *Heartbeats) requeue(batch map[int64]heartbeat) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, b := range batch {
		if _, newer := h.pending[id]; !newer {
			h.pending[id] = b
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
	select {
	case h.flushed <- struct{}{}:
	default:
	}
}
