package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/nodes"
)

// Hub wakes assignment long-polls when Postgres notifies a change. Every
// instance LISTENs, so a change committed through any instance wakes the
// agents polling every instance.
type Hub struct {
	mu      sync.Mutex
	waiters map[int64]chan struct{}
	log     *slog.Logger
	ready   chan struct{}
	once    sync.Once
	closing chan struct{}
	close   sync.Once
	// OnAccess, when set, hears the node ids of every access notification
	// (nil: all nodes, after a reconnect), so caches of credential checks
	// stay current on every instance.
	OnAccess func(ids []int64)
	// OnAssign, when set, hears every assignment notification's payload
	// (and "*" after a reconnect) before the waiters it names wake.
	OnAssign func(payload string)
}

// NewHub returns an idle hub; Run connects it.
func NewHub(log *slog.Logger) *Hub {
	return &Hub{waiters: map[int64]chan struct{}{}, log: log, ready: make(chan struct{}), closing: make(chan struct{})}
}

// Wait returns a channel closed at the next change for the node. Take it
// before reading the node's version so no change slips between.
func (h *Hub) Wait(nodeID int64) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.waiters[nodeID]
	if !ok {
		ch = make(chan struct{})
		h.waiters[nodeID] = ch
	}
	return ch
}

func (h *Hub) wake(payload string) {
	// What the notification says is recorded before anyone wakes to it.
	if h.OnAssign != nil {
		h.OnAssign(payload)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := nodes.ParseNodeIDs(payload)
	if ids == nil {
		for id, ch := range h.waiters {
			close(ch)
			delete(h.waiters, id)
		}
		return
	}
	for _, id := range ids {
		if ch, ok := h.waiters[id]; ok {
			close(ch)
			delete(h.waiters, id)
		}
	}
}

// Close ends every long-poll: Closing is closed and all waiters woken.
func (h *Hub) Close() {
	h.close.Do(func() { close(h.closing) })
	h.wake("*")
}

// Closing is closed when the instance shuts down.
func (h *Hub) Closing() <-chan struct{} { return h.closing }

// Ready is closed once the hub first listens.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run listens until ctx ends, reconnecting with backoff. After a
// reconnect it wakes every waiter, since notifications may have been missed.
func (h *Hub) Run(ctx context.Context, connString string) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listen(ctx, connString)
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("assignment listener lost; reconnecting", "err", err, "in", backoff)
		h.access("*")
		h.wake("*")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (h *Hub) listen(ctx context.Context, connString string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, ch := range []string{nodes.AssignChannel, nodes.AccessChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	h.once.Do(func() { close(h.ready) })
	// Notifications may have been missed while not listening.
	h.access("*")
	h.wake("*")
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == nodes.AccessChannel {
			h.access(n.Payload)
			continue
		}
		h.wake(n.Payload)
	}
}

func (h *Hub) access(payload string) {
	if h.OnAccess != nil {
		h.OnAccess(nodes.ParseNodeIDs(payload))
	}
}
