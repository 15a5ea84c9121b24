package server

import (
	"context"
	"time"

	"github.com/callplane/callplane/nodes"
)

// retentionEvery is how often the leader prunes history.
const retentionEvery = 10 * time.Minute

// retain prunes history older than its retention setting (ended work,
// events, audit rows, finished alerts, probe results) while this instance
// leads: at once, then every retentionEvery. One instance does it, so
// several call managers do not race over the same rows.
func (s *Server) retain(ctx context.Context, _ int64) {
	t := time.NewTicker(retentionEvery)
	defer t.Stop()
	for {
		r, err := s.settings.Retention(ctx)
		if err == nil {
			var p nodes.Pruned
			p, err = s.nodes.Prune(ctx, r.PruneAges())
			if p != (nodes.Pruned{}) {
				s.log.Info("pruned history", "work", p.Work, "events", p.Events, "audit", p.Audit, "alerts", p.Alerts, "probe_results", p.Probes)
			}
		}
		if err != nil && ctx.Err() == nil {
			s.log.Error("prune history", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
