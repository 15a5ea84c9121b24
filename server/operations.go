package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/callplane/callplane/nodes/health"
)

// startOperations prepares what operators run Callplane with: the
// unauthenticated metrics listener when configured, and the leader's
// maintenance and reminder loops.
func (s *Server) startOperations() error {
	if s.cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", s.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listen on %s: %w", s.cfg.MetricsListen, err)
		}
		s.metricsLn = ln
		s.AddBackground(func(ctx context.Context) { s.serveMetrics(ctx, ln) })
	}
	s.AddBackground(func(ctx context.Context) { s.leader.WhileLeading(ctx, s.syncMaintenance) })
	reminders := health.NewReminders(s.nodes, s.settings, s.leader, s.log)
	s.AddBackground(func(ctx context.Context) { s.leader.WhileLeading(ctx, reminders.Run) })
	return nil
}

// MetricsAddr is the bound --metrics-listen address ("" when off).
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// MaintenanceSyncEvery is how often the leader mirrors the maintenance
// windows in force into the node rows: a scheduled window starts within
// this time of its start.
const MaintenanceSyncEvery = time.Second

// syncMaintenance runs on the leader: every second, windows whose start
// has come put their node in maintenance.
func (s *Server) syncMaintenance(ctx context.Context, _ int64) {
	t := time.NewTicker(MaintenanceSyncEvery)
	defer t.Stop()
	for {
		if err := s.nodes.SyncMaintenance(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("sync maintenance windows", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
