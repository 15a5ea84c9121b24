package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every Callplane series.
const Namespace = "callplane"

// Registry holds the process-wide instruments below plus the Go runtime
// and process collectors. Each server adds its database collector in a
// registry of its own and gathers both.
var Registry = prometheus.NewRegistry()

// instruments are the collectors declared here, for Describe.
var instruments []prometheus.Collector

func register[C prometheus.Collector](c C) C {
	Registry.MustRegister(c)
	instruments = append(instruments, c)
	return c
}

// Describe sends the descriptions of every instrument declared here.
func Describe(ch chan<- *prometheus.Desc) {
	for _, c := range instruments {
		c.Describe(ch)
	}
}

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

var (
	// Placements counts work items placed on a node or left unplaced, by
	// work kind and outcome (placed, unplaced) and by cause.
	Placements = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "placements_total",
		Help: "Work items placed (outcome placed) or left waiting (outcome unplaced), by work kind and cause.",
	}, []string{"kind", "outcome", "cause"}))

	// Moves counts work items moved off a node, by work kind, cause and
	// outcome (moved, unplaced).
	Moves = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "moves_total",
		Help: "Work items moved off a node (outcome moved) or left unplaced by a move, by work kind and cause.",
	}, []string{"kind", "cause", "outcome"}))

	// ProbeDuration observes every health probe, by node kind and result.
	ProbeDuration = register(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "probe_duration_seconds",
		Help:    "Health probe latency by node kind and result (ok, fail).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"kind", "result"}))

	// ProbeFailures counts failed probes by node kind.
	ProbeFailures = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "probe_failures_total",
		Help: "Failed health probes by node kind.",
	}, []string{"kind"}))

	// CheckerRounds counts health checker rounds this instance ran.
	CheckerRounds = register(prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "checker_rounds_total",
		Help: "Health checker rounds run by this instance.",
	}))

	// MailerAttempts counts alert email send attempts by result.
	MailerAttempts = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "mailer_attempts_total",
		Help: "Alert email send attempts by this instance, by result (sent, retry, failed).",
	}, []string{"result"}))

	// HTTPRequests counts HTTP requests by method, route pattern and status.
	HTTPRequests = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "http_requests_total",
		Help: "HTTP requests by method, route pattern and status code.",
	}, []string{"method", "route", "code"}))

	// HTTPDuration observes request durations by route pattern.
	HTTPDuration = register(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "http_request_duration_seconds",
		Help:    "HTTP request duration by route pattern (long-polls included).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30, 60},
	}, []string{"method", "route"}))

	// AgentAcks counts the acks agents sent, by the way they came: on a
	// POST stream, a heartbeat, a long-poll, a batch or a single ack.
	AgentAcks = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "agent_acks_total",
		Help: "Assignment acks received from agents, by how they came (stream, heartbeat, poll, batch, single).",
	}, []string{"via"}))

	// AgentHeartbeats counts the heartbeats agents sent, by the way they
	// came: a request of its own, or a line of a POST stream.
	AgentHeartbeats = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "agent_heartbeats_total",
		Help: "Heartbeats received from agents, by how they came (request, stream).",
	}, []string{"via"}))

	// StreamDeliveries counts the lines of deliveries written on streams,
	// by where their delta came from: what this instance had just placed
	// (not read back), or a read of the database.
	StreamDeliveries = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "stream_deliveries_total",
		Help: "Deliveries written on assignment streams, by where they were read (placed: kept by this instance's placements; database).",
	}, []string{"from"}))

	// Reconciles counts the comparisons of an agent's report of what it
	// runs with its node's live work, by how they went: "same" (the
	// report's digest was the node's: one row read), "behind" (it was,
	// with the deliveries still on their way added) or "compared" (the
	// node's live work read and compared item by item).
	Reconciles = register(prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "reconciles_total",
		Help: "Reconciliations of agents' running reports, by result (same: the digests matched; behind: they matched with the deliveries on their way; compared: item by item).",
	}, []string{"result"}))

	// LongPollWaiters is the number of agent long-polls waiting now.
	LongPollWaiters = register(prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "longpoll_waiters",
		Help: "Agent assignment long-polls waiting on this instance.",
	}))
)

// Cause maps a free-text move or placement cause ("node disabled by
// alice@example.com") to one of a fixed set of label values, so an
// administrator's name never becomes a series.
func Cause(cause string) string {
	c := strings.ToLower(cause)
	switch {
	case strings.Contains(c, "disabled"):
		return "disabled"
	case strings.Contains(c, "removed"):
		return "removed"
	case strings.Contains(c, "automatic failover"), strings.Contains(c, "still down"), strings.Contains(c, "node down"):
		return "failover"
	case strings.Contains(c, "capacity"):
		return "capacity"
	case strings.Contains(c, "came up"), strings.Contains(c, "enabled"), strings.Contains(c, "unplaced"), strings.Contains(c, "ended"), strings.Contains(c, "waiting"):
		return "waiting"
	case strings.Contains(c, "sip"):
		return "sip"
	case c == "" || strings.Contains(c, "new"):
		return "new"
	}
	return "other"
}
