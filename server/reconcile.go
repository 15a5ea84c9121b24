package server

import (
	"context"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// reconciler remembers when each node was last reconciled.
type reconciler struct {
	mu   sync.Mutex
	last map[int64]time.Time
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

// maybeReconcile compares what an agent reports running with what it
// should run, at most every agentproto.ReconcileEvery per node.
func (s *Server) maybeReconcile(ctx context.Context, a nodes.NodeAuth, running []agentproto.Running) {
	if !s.recon.due(a.NodeID) {
		return
	}
	changed, err := s.nodes.Reconcile(ctx, a.NodeID, running)
	if err != nil {
		s.log.Warn("reconcile agent", "node", a.Name, "err", err)
		return
	}
	if changed {
		s.log.Info("agent's running work differed from its assignments; reconciled", "node", a.Name)
	}
}
