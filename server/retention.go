package server

import (
	"context"
	"time"
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
		r, err := s.nodes.Retention(ctx)
		if err == nil {
			var pruned map[string]int64
			pruned, err = s.nodes.Prune(ctx, r)
			for k, n := range pruned {
				if n > 0 {
					s.log.Info("pruned history", "setting", k, "rows", n)
				}
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
