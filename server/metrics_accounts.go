package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/server/metrics"
)

// passwordHashMetrics reads this instance's password-hashing pool on
// every scrape: how many sign-ins hash now, how many wait for a worker
// (a sign-in that waits too long is answered 503), and how many hashes
// ran since start.
func passwordHashMetrics(a *accounts.Service) []prometheus.Collector {
	gauge := func(name, help string, v func(accounts.HashStats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metrics.Namespace, Name: name, Help: help},
			func() float64 { return float64(v(a.HashStats())) })
	}
	return []prometheus.Collector{
		gauge("password_hash_workers", "Password hashes (argon2id) this instance runs at once at most.",
			func(s accounts.HashStats) int64 { return int64(s.Workers) }),
		gauge("password_hashes_running", "Password hashes running now on this instance.",
			func(s accounts.HashStats) int64 { return s.Running }),
		gauge("password_hashes_waiting", "Sign-ins and password changes waiting for a free hasher on this instance.",
			func(s accounts.HashStats) int64 { return s.Waiting }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "password_hashes_total",
			Help: "Password hashes this instance ran since it started."},
			func() float64 { return float64(a.HashStats().Total) }),
	}
}
