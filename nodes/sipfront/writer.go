package sipfront

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes"
)

// maxBatch bounds the new calls placed by one transaction.
const maxBatch = 500

// answerDelay is how long a call's answered mark waits to be written on
// its own: a call that ends meanwhile (most calls of the benchmark, and
// every call refused after its answer) has it written with its end, one
// row update instead of two. The mark is information for the portal; the
// call's row is durable before the call is forwarded.
const answerDelay = time.Second

// holdEnd bounds how long a BYE's answer waits for its call's end to be
// committed: as long as the caller retransmits the BYE (Timer F, 64*T1).
const holdEnd = 32 * time.Second

// writer is the front door's one database writer (group commit): the
// first tries of new calls and the call ends that arrive while a
// transaction is being written all go into the next one
// (nodes.Service.CommitCalls), with the answered marks (those of calls
// that end go with their end; the others after answerDelay). So the WAL is flushed once per batch
// rather than once per write, the writes never wait on each other's node
// locks, and the batches grow with the load. Under light load a batch is
// one write and adds nothing.
//
// A new call waits for its batch (it is forwarded only once its row is
// durable). So does the answer to the BYE that ends a call: the caller
// retransmits an unanswered BYE, so until the end is committed the
// caller holds it, and a call that ended is never left live by a crash.
// An end written twice ends the work once (the statement only ends live
// work). Ends and answers of a batch that failed go into the next one.
type writer struct {
	calls    Calls
	instance string
	log      *slog.Logger
	mu       sync.Mutex
	places   []placeReq
	answers  []nodes.CallAnswer
	ends     []endReq
	touched  map[int64]struct{}
	wake     chan struct{}
	notified chan struct{}
}

type placeReq struct {
	id  nodes.CallIdentity
	res chan placeRes
}

type placeRes struct {
	t   nodes.CallTarget
	err error
}

type endReq struct {
	end  nodes.CallEnd
	done chan struct{} // closed once the end is committed
}

func newWriter(calls Calls, instance string, log *slog.Logger) *writer {
	return &writer{calls: calls, instance: instance, log: log, touched: map[int64]struct{}{},
		wake: make(chan struct{}, 1), notified: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// place queues a new call and waits for its batch to commit.
func (w *writer) place(ctx context.Context, id nodes.CallIdentity) (nodes.CallTarget, error) {
	req := placeReq{id: id, res: make(chan placeRes, 1)}
	w.mu.Lock()
	w.places = append(w.places, req)
	w.mu.Unlock()
	signal(w.wake)
	select {
	case r := <-req.res:
		return r.t, r.err
	case <-ctx.Done():
		return nodes.CallTarget{}, ctx.Err()
	}
}

func (w *writer) answered(a nodes.CallAnswer) {
	w.mu.Lock()
	w.answers = append(w.answers, a)
	w.mu.Unlock()
	signal(w.wake)
}

// end queues a call's end; the channel closes once it is committed.
func (w *writer) end(e nodes.CallEnd) <-chan struct{} {
	done := make(chan struct{})
	w.mu.Lock()
	w.ends = append(w.ends, endReq{end: e, done: done})
	w.mu.Unlock()
	signal(w.wake)
	return done
}

// notify wakes the agents of nodes whose calls changed outside a batch.
func (w *writer) notify(nodeIDs ...int64) {
	w.mu.Lock()
	for _, id := range nodeIDs {
		if id != 0 {
			w.touched[id] = struct{}{}
		}
	}
	w.mu.Unlock()
	signal(w.notified)
}

// run writes batches until ctx ends, then writes what is left; beside it
// one goroutine sends the agents' notifications (one for all nodes touched
// meanwhile), off the path of the next batch.
func (w *writer) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.runNotify(ctx) }()
	tick := time.NewTicker(answerDelay / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			w.flush(fctx, true)
			cancel()
			w.failPlaces(ctx.Err())
			wg.Wait()
			return
		case <-w.wake:
			w.flush(ctx, false)
		case <-tick.C:
			w.flush(ctx, false)
		}
	}
}

// flush writes batches until nothing is due: every new call and end, and
// the answers that waited answerDelay (all of them when final).
func (w *writer) flush(ctx context.Context, final bool) {
	for {
		w.mu.Lock()
		n := min(len(w.places), maxBatch)
		places := w.places[:n:n]
		w.places = w.places[n:]
		ends := w.ends
		w.ends = nil
		answers := w.takeAnswers(ends, final)
		w.mu.Unlock()
		if n == 0 && len(answers) == 0 && len(ends) == 0 {
			return
		}
		b := nodes.CallBatch{Answers: answers, Ends: make([]nodes.CallEnd, len(ends)), Places: make([]nodes.CallIdentity, n)}
		for i, e := range ends {
			b.Ends[i] = e.end
		}
		for i, p := range places {
			b.Places[i] = p.id
		}
		res, err := w.calls.CommitCalls(ctx, b, w.instance)
		if err != nil {
			w.log.Error("write SIP calls", "answered", len(answers), "ended", len(ends), "new", n, "err", err)
			for _, p := range places {
				p.res <- placeRes{err: err}
			}
			if ctx.Err() != nil {
				return
			}
			// The ends and answers go again with the next batch; a pause
			// keeps a database that is down from being hammered.
			w.mu.Lock()
			w.answers, w.ends = append(answers, w.answers...), append(ends, w.ends...)
			w.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for i, p := range places {
			p.res <- placeRes{t: res.Targets[i], err: res.Errs[i]}
		}
		for _, e := range ends {
			close(e.done)
		}
		w.notify(res.Touched...)
	}
}

// takeAnswers attaches the pending answers of calls that end in this
// batch to their ends and returns those due on their own. w.mu is held.
func (w *writer) takeAnswers(ends []endReq, final bool) []nodes.CallAnswer {
	if len(w.answers) == 0 {
		return nil
	}
	ending := make(map[string]int, len(ends))
	for i, e := range ends {
		ending[e.end.Ref] = i
	}
	var due []nodes.CallAnswer
	keep := w.answers[:0]
	for _, a := range w.answers {
		if i, ok := ending[a.Ref]; ok {
			ends[i].end.Answer = &a
		} else if final || time.Since(a.At) >= answerDelay {
			due = append(due, a)
		} else {
			keep = append(keep, a)
		}
	}
	w.answers = keep
	return due
}

func (w *writer) failPlaces(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.places {
		p.res <- placeRes{err: err}
	}
	w.places = nil
}

// notifyEvery is the shortest time between two notifications: the nodes
// touched meanwhile share the next one, so the agents' long-polls wake
// at most this often for calls (a batch is written every few
// milliseconds under load).
const notifyEvery = 20 * time.Millisecond

func (w *writer) runNotify(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.notified:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(notifyEvery):
		}
		w.mu.Lock()
		touched := w.touched
		w.touched = map[int64]struct{}{}
		w.mu.Unlock()
		if len(touched) == 0 {
			continue
		}
		ids := make([]int64, 0, len(touched))
		for id := range touched {
			ids = append(ids, id)
		}
		w.calls.NotifyNodes(ctx, ids...)
	}
}
