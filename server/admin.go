package server

import (
	"context"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/agentproto"
)

// Admin is what the administrative commands need: the services on the
// database, and the certificate pin and URLs (comma-separated) for join
// commands.
type Admin struct {
	Nodes *nodes.Service
	Auth  *accounts.Service
	Pin   string
	URL   string
	pool  *pgxpool.Pool
	pg    *localpg.Server
}

// OpenAdmin opens the database (starting the local one if needed) for a
// command-line action.
func OpenAdmin(ctx context.Context, cfg Config, log *slog.Logger) (*Admin, error) {
	cfg = cfg.WithDefaults()
	cert, err := loadOrCreateCert(cfg)
	if err != nil {
		return nil, err
	}
	pool, _, pg, err := OpenDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	pin := agentproto.PinOf(cert.Leaf)
	// Join commands name every call manager the running instances
	// advertise (instances.go), an explicit --public-url first. This
	// process serves nothing, so its own listen address is only the
	// fallback when no instance has advertised itself yet.
	url := cfg.PublicURL
	if urls, err := joinServers(ctx, pool, advert{URL: url, Pin: pin}); err == nil && len(urls) > 0 {
		url = strings.Join(urls, ",")
	} else if url == "" {
		url = "https://" + cfg.Listen
	}
	return &Admin{Nodes: nodes.NewService(pool, log), Auth: accounts.NewService(pool, log), Pin: pin, URL: url, pool: pool, pg: pg}, nil
}

// Close releases the database.
func (a *Admin) Close() {
	a.pool.Close()
	if a.pg != nil {
		a.pg.Stop()
	}
}

// JoinCommand is the ready command an operator runs on a node's host.
func JoinCommand(serverURL, token, pin, stateDir string) string {
	return "nodeagent join --server " + serverURL + " --token " + token + " --ca-pin " + pin + " --state-dir " + stateDir
}
