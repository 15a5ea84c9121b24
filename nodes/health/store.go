package health

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/settings"
)

// Store is what the portal reads of health and alerting: the settings
// (owned by nodes/settings, embedded), and beside them the checker's
// status, the disruption guard (status.go) and the alert outbox.
type Store struct {
	*settings.Store
	pool *pgxpool.Pool
}

// NewStore returns a Store over a settings store whose unsaved settings
// come from d; portalURL is the portal's base URL, for links in test
// emails.
func NewStore(pool *pgxpool.Pool, d settings.Defaults, portalURL string, log *slog.Logger) *Store {
	return &Store{Store: settings.NewStore(pool, d, portalURL, log), pool: pool}
}

// OutboxStatus is the state of the alert outbox, for the settings page.
type OutboxStatus struct {
	Pending, Sent, Failed int64
	// RecentFailed are the newest alerts that failed for good, with
	// their last error; Retrying the pending ones that failed at least once.
	RecentFailed []dbsqlc.Alert
	Retrying     []dbsqlc.Alert
}

// Outbox returns the state of the alert outbox.
func (s *Store) Outbox(ctx context.Context) (OutboxStatus, error) {
	var o OutboxStatus
	counts, err := db.Q.AlertCounts(ctx, s.pool)
	if err != nil {
		return o, err
	}
	for _, c := range counts {
		switch c.State {
		case "pending":
			o.Pending = c.N
		case "sent":
			o.Sent = c.N
		case "failed":
			o.Failed = c.N
		}
	}
	if o.RecentFailed, err = db.Q.AlertListFailed(ctx, s.pool, 10); err != nil {
		return o, err
	}
	o.Retrying, err = db.Q.AlertListPendingWithError(ctx, s.pool, 10)
	return o, err
}
