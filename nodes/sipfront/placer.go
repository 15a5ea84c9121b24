package sipfront

import (
	"context"
	"sync"

	"github.com/callplane/callplane/nodes"
)

// maxBatch bounds the calls placed by one transaction.
const maxBatch = 500

// placer places the first try of new calls in batches: every INVITE that
// arrives while a batch is being written joins the next one, so the node
// rows are locked and the WAL flushed once per batch rather than once per
// call. Under light load a batch is one call and adds nothing; under heavy
// load the batches grow and the rate keeps up (group commit).
type placer struct {
	calls    Calls
	instance string
	mu       sync.Mutex
	queue    []placeReq
	wake     chan struct{}
}

type placeReq struct {
	id  nodes.CallIdentity
	res chan placeRes
}

type placeRes struct {
	t   nodes.CallTarget
	err error
}

func newPlacer(calls Calls, instance string) *placer {
	return &placer{calls: calls, instance: instance, wake: make(chan struct{}, 1)}
}

// place queues a call and waits for its batch.
func (p *placer) place(ctx context.Context, id nodes.CallIdentity) (nodes.CallTarget, error) {
	req := placeReq{id: id, res: make(chan placeRes, 1)}
	p.mu.Lock()
	p.queue = append(p.queue, req)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	select {
	case r := <-req.res:
		return r.t, r.err
	case <-ctx.Done():
		return nodes.CallTarget{}, ctx.Err()
	}
}

func (p *placer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			p.fail(ctx.Err())
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			n := min(len(p.queue), maxBatch)
			batch := p.queue[:n:n]
			p.queue = p.queue[n:]
			p.mu.Unlock()
			if n == 0 {
				break
			}
			ids := make([]nodes.CallIdentity, n)
			for i, r := range batch {
				ids[i] = r.id
			}
			targets, err := p.calls.PlaceCalls(ctx, ids, p.instance)
			for i, r := range batch {
				if err != nil {
					r.res <- placeRes{err: err}
				} else {
					r.res <- placeRes{t: targets[i]}
				}
			}
		}
	}
}

// fail answers whatever is queued when the front door stops.
func (p *placer) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.queue {
		r.res <- placeRes{err: err}
	}
	p.queue = nil
}
