package nodes

import (
	"context"
	"fmt"
	"time"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// PruneAges says how old each history may grow before Prune deletes it;
// the retention settings (nodes/settings) give them. Probe results have
// no age here: their statement reads retention_probes from the settings
// table itself, so the health checker's own pruning agrees.
type PruneAges struct {
	Work   time.Duration // ended work items
	Events time.Duration // the event log
	Audit  time.Duration // the audit log
	Alerts time.Duration // sent or failed alerts (pending ones are never pruned)
}

// Pruned counts the rows one retention pass deleted, per history.
type Pruned struct {
	Work, Events, Audit, Alerts, Probes int64
}

// pruneBatch bounds the rows one prune statement deletes, so a first pass
// over a large history does not hold one long transaction.
const pruneBatch = 10000

// Prune deletes the history older than its age: ended work, events,
// audit rows, alerts that were sent or given up on, and probe results.
// The leader runs it periodically; it deletes in batches until a batch
// comes back short, and stops with ctx.
func (s *Service) Prune(ctx context.Context, a PruneAges) (Pruned, error) {
	var out Pruned
	steps := []struct {
		what  string
		count *int64
		fn    func() (int64, error)
	}{
		{"ended work", &out.Work, func() (int64, error) {
			return s.q.WorkPruneEnded(ctx, s.pool, dbsqlc.WorkPruneEndedParams{OlderThanSeconds: a.Work.Seconds(), Lim: pruneBatch})
		}},
		{"events", &out.Events, func() (int64, error) {
			return s.q.EventPrune(ctx, s.pool, dbsqlc.EventPruneParams{OlderThanSeconds: a.Events.Seconds(), Lim: pruneBatch})
		}},
		{"audit log", &out.Audit, func() (int64, error) {
			return s.q.AuditPrune(ctx, s.pool, dbsqlc.AuditPruneParams{OlderThanSeconds: a.Audit.Seconds(), Lim: pruneBatch})
		}},
		{"alerts", &out.Alerts, func() (int64, error) {
			return s.q.AlertPrune(ctx, s.pool, dbsqlc.AlertPruneParams{OlderThanSeconds: a.Alerts.Seconds(), Lim: pruneBatch})
		}},
		{"probe results", &out.Probes, func() (int64, error) { return s.q.ProbeResultPrune(ctx, s.pool) }},
	}
	for _, st := range steps {
		for {
			n, err := st.fn()
			if err != nil {
				return out, fmt.Errorf("prune %s: %w", st.what, db.Translate(err))
			}
			*st.count += n
			if n < pruneBatch || ctx.Err() != nil {
				break
			}
		}
	}
	return out, ctx.Err()
}
