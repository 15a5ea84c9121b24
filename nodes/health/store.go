package health

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/nodes/settings"
)

// Store is what the portal reads of health and alerting: the settings
// (owned by nodes/settings, embedded), and beside them the checker's
// status and the disruption guard (status.go). The alert outbox is the
// domain's (nodes.Service.OutboxStatus).
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
