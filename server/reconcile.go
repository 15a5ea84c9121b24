package server

import (
	"context"
	"sync"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// ReconcileEvery is how often, at most, one node's reported running set is
// compared with its desired set. Agents report the set when it changes and
// every tenth heartbeat; comparing each report would cost a query per
// change on a busy node, and drift (a lost ack, a missed delivery) is rare.
const ReconcileEvery = 5 * time.Second

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
	if time.Since(rc.last[nodeID]) < ReconcileEvery {
		return false
	}
	rc.last[nodeID] = time.Now()
	return true
}

// maybeReconcile compares what an agent reports running with what it
// should run, at most every ReconcileEvery per node.
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
