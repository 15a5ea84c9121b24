package sipfront

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes"
)

// writer groups the writes that need not hold up a call: answered marks
// (one statement for all calls answered meanwhile), call ends (one
// statement for all calls ended meanwhile; the BYE's answer does not wait
// for it) and agent notifications (one for all nodes touched meanwhile). A flush runs as
// soon as there is something to write; what arrives during a flush goes
// in the next one, so the grouping grows with the load.
type writer struct {
	calls   Calls
	log     *slog.Logger
	mu      sync.Mutex
	answers []nodes.CallAnswer
	ends    []nodes.CallEnd
	touched map[int64]struct{}
	wake    chan struct{}
}

func newWriter(calls Calls, log *slog.Logger) *writer {
	return &writer{calls: calls, log: log, touched: map[int64]struct{}{}, wake: make(chan struct{}, 1)}
}

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writer) answered(a nodes.CallAnswer) {
	w.mu.Lock()
	w.answers = append(w.answers, a)
	w.mu.Unlock()
	w.signal()
}

func (w *writer) end(e nodes.CallEnd) {
	w.mu.Lock()
	w.ends = append(w.ends, e)
	w.mu.Unlock()
	w.signal()
}

func (w *writer) notify(nodeID int64) {
	if nodeID == 0 {
		return
	}
	w.mu.Lock()
	w.touched[nodeID] = struct{}{}
	w.mu.Unlock()
	w.signal()
}

func (w *writer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			w.flush(fctx)
			cancel()
			return
		case <-w.wake:
			w.flush(ctx)
		}
	}
}

func (w *writer) flush(ctx context.Context) {
	w.mu.Lock()
	answers, ends, touched := w.answers, w.ends, w.touched
	w.answers, w.ends, w.touched = nil, nil, map[int64]struct{}{}
	w.mu.Unlock()
	if len(ends) > 0 {
		ids, err := w.calls.EndCalls(ctx, ends)
		if err != nil {
			w.log.Error("end SIP calls", "calls", len(ends), "err", err)
		}
		for _, id := range ids {
			touched[id] = struct{}{}
		}
	}
	if len(answers) > 0 {
		if err := w.calls.CallsAnswered(ctx, answers); err != nil {
			w.log.Error("mark SIP calls answered", "calls", len(answers), "err", err)
		}
	}
	if len(touched) > 0 {
		ids := make([]int64, 0, len(touched))
		for id := range touched {
			ids = append(ids, id)
		}
		w.calls.NotifyNodes(ctx, ids...)
	}
}
