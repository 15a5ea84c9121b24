package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server/metrics"
)

// clusterCollector reads the cluster's state from Postgres on every
// scrape: whichever instance Prometheus scrapes reports the same nodes,
// work and alerts. Labels are bounded by the node count and fixed sets.
type clusterCollector struct {
	s *Server

	up, nodes, capacity, used, reported, hbAge, maint, flapping   *prometheus.Desc
	work, workCost, alerts, alertAttempts, alertsAcked            *prometheus.Desc
	leaderEpoch, isLeader, lastRound, maintWindows, scrapeSeconds *prometheus.Desc
	sipInvites, sipCalls, sipFailovers, sipInDialog               *prometheus.Desc
}

func newClusterCollector(s *Server) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(metrics.Namespace+"_"+name, help, labels, nil)
	}
	return &clusterCollector{
		s:             s,
		up:            d("database_up", "1 when this scrape could read the database."),
		nodes:         d("nodes", "Nodes by kind, admin state and health.", "kind", "admin_state", "health"),
		capacity:      d("node_capacity", "A node's capacity in work units.", "node", "kind"),
		used:          d("node_used", "Work units assigned to a node.", "node", "kind"),
		reported:      d("node_reported_load", "The load a node's agent last reported.", "node", "kind"),
		hbAge:         d("node_heartbeat_age_seconds", "Seconds since a node's agent last heartbeat (absent before the first).", "node", "kind"),
		maint:         d("node_in_maintenance", "1 while a node is inside a maintenance window.", "node", "kind"),
		flapping:      d("node_flapping", "1 while a node is held as flapping.", "node", "kind"),
		work:          d("work", "Live work items by work kind and state.", "kind", "state"),
		workCost:      d("work_units", "Live work units (sum of costs) by work kind and state.", "kind", "state"),
		alerts:        d("alerts", "Alerts in the outbox by type and state (pending, sent, failed).", "type", "state"),
		alertAttempts: d("alert_attempts", "Send attempts recorded on the outbox's alerts, by type and state.", "type", "state"),
		alertsAcked:   d("alerts_acknowledged", "Down alerts an administrator acknowledged.", "type"),
		leaderEpoch:   d("leader_epoch", "Epoch of the leader lease."),
		isLeader:      d("is_leader", "1 when this instance leads (runs the health checker and mailer)."),
		lastRound:     d("checker_last_round_timestamp_seconds", "When the health checker last probed any node (Unix time)."),
		maintWindows:  d("maintenance_windows", "Maintenance windows by phase (active, scheduled).", "phase"),
		scrapeSeconds: d("scrape_database_seconds", "Time spent reading the database for this scrape."),
		sipInvites:    d("sip_invites_total", "Initial INVITEs the SIP front door of this instance received."),
		sipCalls:      d("sip_calls_total", "Calls through the SIP front door of this instance by setup outcome (answered, failed).", "outcome"),
		sipFailovers:  d("sip_failovers_total", "INVITE tries the SIP front door sent on to the next node."),
		sipInDialog:   d("sip_in_dialog_requests_total", "In-dialog requests the SIP front door routed."),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.nodes, c.capacity, c.used, c.reported, c.hbAge, c.maint, c.flapping,
		c.work, c.workCost, c.alerts, c.alertAttempts, c.alertsAcked, c.leaderEpoch, c.isLeader, c.lastRound,
		c.maintWindows, c.scrapeSeconds, c.sipInvites, c.sipCalls, c.sipFailovers, c.sipInDialog} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	isLeader := 0.0
	if _, ok := c.s.leader.Epoch(); ok {
		isLeader = 1
	}
	gauge(c.isLeader, isLeader)
	if c.s.sip != nil {
		st := c.s.sip.Stats()
		counter := func(d *prometheus.Desc, v int64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		counter(c.sipInvites, st.Invites.Load())
		counter(c.sipCalls, st.Answered.Load(), "answered")
		counter(c.sipCalls, st.Failed.Load(), "failed")
		counter(c.sipFailovers, st.Failovers.Load())
		counter(c.sipInDialog, st.InDialog.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.collectDB(ctx, gauge); err != nil {
		c.s.log.Warn("metrics: read the database", "err", err)
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	gauge(c.scrapeSeconds, time.Since(start).Seconds())
}

func (c *clusterCollector) collectDB(ctx context.Context, gauge func(*prometheus.Desc, float64, ...string)) error {
	svc := c.s.nodes
	list, err := svc.ListNodes(ctx, nodes.NodeFilter{})
	if err != nil {
		return err
	}
	counts := map[[3]string]int{}
	now := time.Now()
	var lastRound time.Time
	for _, n := range list {
		counts[[3]string{n.Kind, n.AdminState, n.Health}]++
		gauge(c.capacity, float64(n.Capacity), n.Name, n.Kind)
		gauge(c.used, float64(n.Used), n.Name, n.Kind)
		gauge(c.reported, float64(n.ReportedLoad), n.Name, n.Kind)
		if n.LastHeartbeatAt != nil {
			gauge(c.hbAge, now.Sub(*n.LastHeartbeatAt).Seconds(), n.Name, n.Kind)
		}
		gauge(c.maint, b2f(n.InMaintenance(now)), n.Name, n.Kind)
		gauge(c.flapping, b2f(n.Flapping), n.Name, n.Kind)
		if n.LastProbeAt != nil && n.LastProbeAt.After(lastRound) {
			lastRound = *n.LastProbeAt
		}
	}
	// Every combination is reported, zeros included, so a series does not
	// vanish when its last node changes state.
	for _, k := range nodes.Kinds {
		for _, a := range nodes.AdminStates {
			for _, h := range nodes.Healths {
				gauge(c.nodes, float64(counts[[3]string{k, a, h}]), k, a, h)
			}
		}
	}
	if !lastRound.IsZero() {
		gauge(c.lastRound, float64(lastRound.UnixNano())/1e9)
	}
	wc, err := svc.WorkCounts(ctx)
	if err != nil {
		return err
	}
	type ks struct{ kind, state string }
	work, units := map[ks]int64{}, map[ks]int64{}
	for _, w := range wc {
		work[ks{w.Kind, w.State}], units[ks{w.Kind, w.State}] = w.N, w.Cost
	}
	for _, k := range nodes.WorkKinds {
		for _, st := range []string{nodes.WorkAssigned, nodes.WorkActive, nodes.WorkUnplaced} {
			gauge(c.work, float64(work[ks{k, st}]), k, st)
			gauge(c.workCost, float64(units[ks{k, st}]), k, st)
		}
	}
	ac, err := svc.AlertTallies(ctx)
	if err != nil {
		return err
	}
	alerts, attempts, acked := map[ks]int64{}, map[ks]int64{}, map[string]int64{}
	types := map[string]bool{"health": true, "capacity": true}
	for _, a := range ac {
		types[a.Type] = true
		alerts[ks{a.Type, a.State}], attempts[ks{a.Type, a.State}] = a.N, a.Attempts
		acked[a.Type] += a.Acked
	}
	for t := range types {
		for _, st := range []string{"pending", "sent", "failed"} {
			gauge(c.alerts, float64(alerts[ks{t, st}]), t, st)
			gauge(c.alertAttempts, float64(attempts[ks{t, st}]), t, st)
		}
		gauge(c.alertsAcked, float64(acked[t]), t)
	}
	epoch, err := c.s.leader.LeaseEpoch(ctx)
	if err != nil {
		return err
	}
	gauge(c.leaderEpoch, float64(epoch))
	mw, err := svc.ListCurrentMaintenance(ctx)
	if err != nil {
		return err
	}
	var active, scheduled int
	for _, w := range mw {
		if w.StartsAt.After(now) {
			scheduled++
		} else {
			active++
		}
	}
	gauge(c.maintWindows, float64(active), "active")
	gauge(c.maintWindows, float64(scheduled), "scheduled")
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves the Prometheus text format: the process-wide
// instruments, this instance's cluster collector and its password-hashing
// pool.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newClusterCollector(s))
	reg.MustRegister(passwordHashMetrics(s.auth)...)
	return promhttp.HandlerFor(prometheus.Gatherers{metrics.Registry, reg}, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// metricsAuth guards /metrics on the main listener: an API token of
// either scope (read is enough). The separate --metrics-listen address
// serves it without authentication.
func (s *Server) metricsAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.nodes.AuthAPIToken(r.Context(), bearer(r)); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="callplane"`)
			writeError(w, nodes.ErrUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// httpMetrics counts requests by method, route pattern (never the path,
// which carries names and refs) and status.
func httpMetrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww, ok := w.(middleware.WrapResponseWriter)
		if !ok {
			ww = middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		}
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		method := r.Method
		switch method {
		case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		default:
			method = "other"
		}
		metrics.HTTPRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
		metrics.HTTPDuration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
	})
}

// serveMetrics serves /metrics alone, over plain HTTP and without
// authentication, on the --metrics-listen address until ctx ends.
func (s *Server) serveMetrics(ctx context.Context, ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics listener", "err", err)
	}
}

// MetricNames lists the name of every callplane_ series /metrics may
// expose, observed yet or not.
func MetricNames() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		metrics.Describe(ch)
		newClusterCollector(nil).Describe(ch)
		close(ch)
	}()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	var out []string
	for d := range ch {
		if m := re.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	sort.Strings(out)
	return out
}
