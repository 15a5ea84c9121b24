package health

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/nodes/settings"
)

// Store is what the portal reads of health and alerting: the settings
// (owned by nodes/settings, embedded), and beside them the checker's
// status read against them (status.go). The alert outbox and the
// disruption guard's confirmation are the domain's
// (nodes.Service.OutboxStatus, ConfirmDisruption).
type Store struct {
	*settings.Store
	svc StatusDomain
}

// NewStore returns a Store over the domain svc and a settings store on
// pool whose unsaved settings come from d; portalURL is the portal's base
// URL, for links in test emails.
func NewStore(svc StatusDomain, pool *pgxpool.Pool, d settings.Defaults, portalURL string, log *slog.Logger) *Store {
	return &Store{Store: settings.NewStore(pool, d, portalURL, log), svc: svc}
}
