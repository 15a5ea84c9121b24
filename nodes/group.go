package nodes

import (
	"context"
	"slices"
	"sync"
	"time"
)

// groupCommit runs concurrent requests of one kind together (group
// commit): while one group runs, the requests that arrive queue up and go
// in the next one, so a burst costs a few transactions and WAL flushes,
// not one each. The first caller to find it idle becomes the flusher: it
// takes what is queued (at most maxItems items by size, and at least one
// request) into one run, hands each caller its outcome, and, if more
// arrived meanwhile, leaves a goroutine to flush them so that its own
// caller is not held up by others' work.
type groupCommit[Req, Res any] struct {
	maxItems int
	size     func(Req) int
	// run does one group: it returns an outcome per request, in order.
	run func(ctx context.Context, reqs []Req) []Res

	mu      sync.Mutex
	pending []*groupWaiter[Req, Res]
	busy    bool
}

type groupWaiter[Req, Res any] struct {
	req  Req
	done chan Res
}

// groupTimeout bounds one group, retries included. It is detached from
// the callers' contexts: a caller that gives up does not fail the others
// in its group.
const groupTimeout = time.Minute

// do runs req with whatever else is queued and returns its outcome, or
// ctx's error when the caller gives up first (the request still
// completes; its outcome is in the database).
func (g *groupCommit[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	w := &groupWaiter[Req, Res]{req: req, done: make(chan Res, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, w)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if lead {
		g.flush(w)
	}
	select {
	case r := <-w.done:
		return r, nil
	case <-ctx.Done():
		var zero Res
		return zero, ctx.Err()
	}
}

// flush runs queued requests, group by group, until until's outcome is
// known (nil: until the queue is empty); then it hands what is left to a
// goroutine.
func (g *groupCommit[Req, Res]) flush(until *groupWaiter[Req, Res]) {
	for {
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.busy = false
			g.mu.Unlock()
			return
		}
		if until != nil && len(until.done) > 0 {
			g.mu.Unlock()
			go g.flush(nil)
			return
		}
		n, items := 1, g.size(g.pending[0].req)
		for n < len(g.pending) && items+g.size(g.pending[n].req) <= g.maxItems {
			items += g.size(g.pending[n].req)
			n++
		}
		group := slices.Clone(g.pending[:n])
		g.pending = slices.Delete(g.pending, 0, n)
		g.mu.Unlock()

		reqs := make([]Req, len(group))
		for i, w := range group {
			reqs[i] = w.req
		}
		ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
		out := g.run(ctx, reqs)
		cancel()
		for i, w := range group {
			w.done <- out[i]
		}
	}
}
