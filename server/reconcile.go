package server

import (
	"context"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// reconciler holds the agents' reports of what they run until its next
// flush, which reconciles them together (nodes.Service.ReconcileReports),
// and remembers when each node was last reconciled.
type reconciler struct {
	mu      sync.Mutex
	last    map[int64]time.Time
	pending map[int64]report
}

// report is a node's latest report, with its name for the log.
type report struct {
	name    string
	running []agentproto.Running
}

func (rc *reconciler) due(nodeID int64) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.last == nil {
		rc.last = map[int64]time.Time{}
	}
	// A tenth of slack: an agent reports a changed set ReconcileEvery after
	// its last report, and that one may have been stamped here a little
	// late; without it every other report would fall just short.
	if time.Since(rc.last[nodeID]) < agentproto.ReconcileEvery*9/10 {
		return false
	}
	rc.last[nodeID] = time.Now()
	return true
}

// maybeReconcile queues what an agent reports running, at most every
// agentproto.ReconcileEvery per node, for the next flush to compare with
// what it should run. The beat is answered meanwhile: its answer does not
// depend on the comparison.
func (s *Server) maybeReconcile(a nodes.NodeAuth, running []agentproto.Running) {
	if !s.recon.due(a.NodeID) {
		return
	}
	s.recon.mu.Lock()
	if s.recon.pending == nil {
		s.recon.pending = map[int64]report{}
	}
	s.recon.pending[a.NodeID] = report{name: a.Name, running: running}
	s.recon.mu.Unlock()
}

// runReconciles reconciles the queued reports every interval until ctx
// ends.
func (s *Server) runReconciles(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.recon.mu.Lock()
		queued := s.recon.pending
		s.recon.pending = nil
		s.recon.mu.Unlock()
		if len(queued) == 0 {
			continue
		}
		reports := make([]nodes.Report, 0, len(queued))
		names := make([]string, 0, len(queued))
		for id, r := range queued {
			reports = append(reports, nodes.Report{NodeID: id, Running: r.running})
			names = append(names, r.name)
		}
		for i, res := range s.nodes.ReconcileReports(ctx, reports) {
			switch {
			case res.Err != nil && ctx.Err() == nil:
				s.log.Warn("reconcile agent", "node", names[i], "err", res.Err)
			case res.Changed:
				s.log.Info("agent's running work differed from its assignments; reconciled", "node", names[i])
			}
		}
	}
}
