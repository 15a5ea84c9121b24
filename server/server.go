package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/assets"
	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/outbox"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/nodes/sipfront"
	"github.com/callplane/callplane/web"
)

// Server is one call manager instance.
type Server struct {
	cfg      Config
	log      *slog.Logger
	pg       *localpg.Server
	pool     *pgxpool.Pool
	dbURL    string
	nodes    *nodes.Service
	auth     *accounts.Service
	hub      *Hub
	hb       *nodes.Heartbeats
	cert     tls.Certificate
	pin      string
	ln       net.Listener
	handler  http.Handler
	enrolLim *limiter
	leader   *Leader
	settings *health.Store
	recon    reconciler
	// metricsLn serves /metrics without authentication (--metrics-listen).
	metricsLn net.Listener
	adverts   instanceAdverts
	sip       *sipfront.Front

	// background tasks started by Run; each stops with its context.
	background []func(ctx context.Context)
}

// OpenDatabase connects to cfg.DatabaseURL, or starts the local Postgres
// under the data dir when it is empty, and applies migrations. It returns
// the pool, the URL it connected to and the local server it started (nil
// with a DATABASE_URL); the caller closes the pool and stops the server.
func OpenDatabase(ctx context.Context, cfg Config, log *slog.Logger) (*pgxpool.Pool, string, *localpg.Server, error) {
	url := cfg.DatabaseURL
	var pg *localpg.Server
	if url == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, "", nil, fmt.Errorf("create data dir: %w", err)
		}
		var err error
		pg, err = localpg.Start(ctx, localpg.Options{Dir: filepath.Join(cfg.DataDir, "postgres"), Log: log})
		if err != nil {
			return nil, "", nil, fmt.Errorf("local postgres: %w", err)
		}
		if err := pg.EnsureDatabase(ctx, "callplane"); err != nil {
			pg.Stop()
			return nil, "", nil, fmt.Errorf("local postgres: %w", err)
		}
		url = pg.URL("callplane")
	}
	pool, err := db.Open(ctx, url, 40)
	if err != nil {
		pg.Stop()
		return nil, "", nil, err
	}
	if err := db.Migrate(ctx, pool, log); err != nil {
		pool.Close()
		pg.Stop()
		return nil, "", nil, err
	}
	return pool, url, pg, nil
}

// New prepares an instance: database, certificate, router and listener.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.WithDefaults()
	s := &Server{cfg: cfg, log: log, hub: NewHub(log), enrolLim: newLimiter(20, time.Minute)}
	var err error
	s.cert, err = loadOrCreateCert(cfg)
	if err != nil {
		return nil, err
	}
	s.pin = agentproto.PinOf(s.cert.Leaf)
	s.pool, s.dbURL, s.pg, err = OpenDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	s.nodes = nodes.NewService(s.pool, log)
	s.hub.OnAccess = s.nodes.ForgetCredentials
	s.hub.OnAssign = s.nodes.Notified
	s.auth = accounts.NewService(s.pool, log)
	s.hb = s.nodes.NewHeartbeats(cfg.HeartbeatFlush)
	s.leader = NewLeader(s.pool, cfg.InstanceID, cfg.LeaseTTL, log)
	s.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.settings = health.NewStore(s.nodes, s.pool, settings.Defaults{SMTPURL: cfg.SMTPURL, AlertFrom: cfg.AlertFrom, AlertTo: cfg.AlertTo}, s.URL(), log)
	checker := health.NewChecker(s.nodes, s.settings, s.leader, log)
	mailer := outbox.New(outbox.Config{Outbox: s.nodes, Store: s.settings, Fence: s.leader, Log: log, PortalURL: s.URL()})
	s.AddBackground(func(ctx context.Context) { s.leader.WhileLeading(ctx, checker.Run) })
	s.AddBackground(func(ctx context.Context) { s.leader.WhileLeading(ctx, mailer.Run) })
	// Assignments a node never acknowledges are placed again.
	s.AddBackground(func(ctx context.Context) {
		s.leader.WhileLeading(ctx, func(ctx context.Context, _ int64) { s.nodes.WatchAcks(ctx, cfg.AckTimeout, cfg.AckTimeout/6) })
	})
	// The portal's load and work history: the leader samples once a minute.
	s.AddBackground(func(ctx context.Context) { s.leader.WhileLeading(ctx, s.nodes.RunSampler) })
	s.AddBackground(func(ctx context.Context) { s.leader.WhileLeading(ctx, s.retain) })
	s.AddBackground(func(ctx context.Context) {
		s.adverts.run(ctx, s.pool, cfg.InstanceID, advert{URL: s.URL(), Pin: s.pin}, log)
	})
	if cfg.SIPListen != "" {
		s.sip, err = sipfront.New(sipfront.Config{Listen: cfg.SIPListen, Public: cfg.SIPPublic, Instance: cfg.InstanceID, Log: log}, s.nodes)
		if err != nil {
			s.ln.Close()
			s.close()
			return nil, err
		}
		s.AddBackground(s.sip.Run)
	}
	if err := s.startOperations(); err != nil {
		s.ln.Close()
		s.close()
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

func (s *Server) close() {
	if s.pool != nil {
		s.pool.Close()
	}
	if s.pg != nil {
		s.pg.Stop()
	}
}

// URL is the base URL of this instance.
func (s *Server) URL() string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	return "https://" + s.ln.Addr().String()
}

// Addr is the bound listen address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SIP returns the SIP front door, nil when it is off.
func (s *Server) SIP() *sipfront.Front { return s.sip }

// Pin is the CA pin agents use with --ca-pin.
func (s *Server) Pin() string { return s.pin }

// Nodes returns the cluster domain service.
func (s *Server) Nodes() *nodes.Service { return s.nodes }

// Auth returns the account service.
func (s *Server) Auth() *accounts.Service { return s.auth }

// Pool returns the database pool.
func (s *Server) Pool() *pgxpool.Pool { return s.pool }

// Handler returns the HTTP handler (for tests).
func (s *Server) Handler() http.Handler { return s.handler }

// Leader returns the leader elector.
func (s *Server) Leader() *Leader { return s.leader }

// Config returns the effective configuration.
func (s *Server) Config() Config { return s.cfg }

// InstanceID implements web.Cluster.
func (s *Server) InstanceID() string { return s.cfg.InstanceID }

// LeaderID implements web.Cluster.
func (s *Server) LeaderID(ctx context.Context) string { return s.leader.Current(ctx) }

// JoinServer implements web.Cluster: every call manager's URL,
// comma-separated (see instances.go).
func (s *Server) JoinServer() string { return s.adverts.get(s.URL()) }

// CAPin implements web.Cluster.
func (s *Server) CAPin() string { return s.pin }

// AddBackground registers a task Run starts and stops with the instance.
func (s *Server) AddBackground(fn func(ctx context.Context)) { s.background = append(s.background, fn) }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Use(clientAddr(s.cfg.TrustedProxies))
	r.Use(httpMetrics)
	r.Use(requestLog(s.log))
	r.Use(securityHeaders)
	r.Use(crossOrigin)
	r.Use(limitBody(s.cfg.BodyTimeout))
	r.Use(validText)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.pool.Ping(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "database unreachable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "checker": s.checkerReport(ctx)})
	})
	static, _ := fs.Sub(assets.FS, ".")
	r.Handle("/assets/*", http.StripPrefix("/assets/", cacheStatic(http.FileServerFS(static))))
	r.With(s.metricsAuth).Get("/metrics", s.metricsHandler().ServeHTTP)
	r.Route("/api/v1", func(r chi.Router) {
		s.agentRoutes(r)
		s.adminRoutes(r)
		s.apiDocRoutes(r)
	})
	portal := &web.Handler{Nodes: s.nodes, Auth: s.auth, Cluster: s, Settings: s.settings, Log: s.log, Version: s.cfg.Version, API: apiOperations()}
	if s.sip != nil {
		portal.SIP = s.sip
	}
	r.Group(portal.Routes)
	return r
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		next.ServeHTTP(w, r)
	})
}

// Run serves until ctx ends, then shuts down gracefully: it stops taking
// requests, lets running ones finish (long-polls are woken), stops the
// background tasks, releases leadership and stops a local Postgres.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: HeaderTimeout,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	tasks := append([]func(context.Context){
		func(ctx context.Context) { s.hub.Run(ctx, s.dbURL) },
		s.hb.Run,
		s.runReconciles,
		s.leader.Run,
		s.housekeeping,
	}, s.background...)
	for _, t := range tasks {
		wg.Add(1)
		go func() { defer wg.Done(); t(bg) }()
	}
	if need, err := s.auth.NeedsSetup(ctx); err == nil && need {
		s.log.Warn("no account exists yet: open the portal and complete first-run setup",
			"url", s.URL()+"/setup", "setup_code", s.auth.SetupCode())
	}
	s.log.Info("call manager listening", "url", s.URL(), "instance", s.cfg.InstanceID, "ca_pin", s.pin)
	errc := make(chan error, 1)
	ln := newConnLimiter(s.ln, s.cfg.MaxConnsPerClient, s.cfg.TrustedProxies, s.connDropped())
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	// Hand leadership over first, so another instance takes over the
	// checker and mailer while this one drains its requests.
	stopBG()
	wg.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Long-polls hold requests open; wake them so shutdown is quick.
	s.hub.Close()
	if serr := srv.Shutdown(shutdownCtx); serr != nil {
		s.log.Warn("graceful shutdown", "err", serr)
	}
	s.log.Info("call manager stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// housekeeping prunes expired sessions, old tokens and probe history.
func (s *Server) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		s.auth.Prune(ctx)
		if n, err := s.nodes.PruneTokens(ctx); err == nil && n > 0 {
			s.log.Info("pruned expired join tokens", "count", n)
		}
		s.enrolLim.prune()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkerReport is /readyz's view of the health checker: which instance
// ran its last round, when, and whether it is stalled. This instance is
// ready to serve either way; a monitor alerts on "stalled".
func (s *Server) checkerReport(ctx context.Context) map[string]any {
	st, err := s.settings.Status(ctx)
	if err != nil {
		return map[string]any{"error": "checker status unavailable"}
	}
	out := map[string]any{
		"leader": st.Holder, "epoch": st.Epoch, "stalled": st.Stalled, "stall_after_s": st.StallAfter.Seconds(),
		"last_round_at": nil, "last_round_age_s": nil, "nodes": st.Nodes, "round_ms": st.RoundTook.Milliseconds(),
		"disruption": st.Disruption.Held(),
	}
	if st.RoundAt != nil {
		out["last_round_at"] = st.RoundAt.UTC().Format(time.RFC3339Nano)
		out["last_round_age_s"] = st.LastRoundAge().Seconds()
	}
	if _, leads := s.leader.Epoch(); leads {
		out["this_instance_leads"] = true
	}
	return out
}
