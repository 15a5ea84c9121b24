package nodes

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// Histories the portal charts and pages it reads. The samples are written
// by the leader through SampleLoad; health changes are recorded by a
// database trigger, so every path that changes a node's health is covered.

// Retention of the histories.
const (
	// LoadSampleKeep is how long load and work samples are kept: the
	// charts show the last 24 hours.
	LoadSampleKeep = 26 * time.Hour
	// HealthHistoryKeep is how long health changes are kept: uptime is
	// shown over 7 days.
	HealthHistoryKeep = 8 * 24 * time.Hour
	// SampleEvery is how often the leader samples load (the samples are
	// keyed by the minute, so sampling faster adds nothing).
	SampleEvery = time.Minute
)

// SampleLoad writes this minute's load sample of every node and the live
// work of every kind, and prunes old samples and health changes. It costs
// three statements per minute whatever the cluster's size.
func (s *Service) SampleLoad(ctx context.Context) error {
	if _, err := s.q.LoadSampleAll(ctx, s.pool); err != nil {
		return fmt.Errorf("sample node load: %w", err)
	}
	if _, err := s.q.KindSampleAll(ctx, s.pool, WorkKinds); err != nil {
		return fmt.Errorf("sample work per kind: %w", err)
	}
	if _, err := s.q.LoadSamplePrune(ctx, s.pool, LoadSampleKeep.Seconds()); err != nil {
		return fmt.Errorf("prune load samples: %w", err)
	}
	if _, err := s.q.KindSamplePrune(ctx, s.pool, LoadSampleKeep.Seconds()); err != nil {
		return fmt.Errorf("prune work samples: %w", err)
	}
	if _, err := s.q.HealthHistoryPrune(ctx, s.pool, HealthHistoryKeep.Seconds()); err != nil {
		return fmt.Errorf("prune health history: %w", err)
	}
	return nil
}

// RunSampler samples load every SampleEvery until ctx ends. The leader
// runs it, so one instance writes the samples.
func (s *Service) RunSampler(ctx context.Context, _ int64) {
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	for {
		if err := s.SampleLoad(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("load sampler", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// LoadHistory returns a node's load samples over the last window.
func (s *Service) LoadHistory(ctx context.Context, nodeID int64, window time.Duration) ([]dbsqlc.LoadSampleListByNodeRow, error) {
	return s.q.LoadSampleListByNode(ctx, s.pool, dbsqlc.LoadSampleListByNodeParams{NodeID: nodeID, WindowSeconds: window.Seconds()})
}

// KindHistory returns the work-per-kind samples over the last window.
func (s *Service) KindHistory(ctx context.Context, window time.Duration) ([]dbsqlc.KindSample, error) {
	return s.q.KindSampleList(ctx, s.pool, window.Seconds())
}

// Uptime is the share of the window a node was up, of the time its health
// was known (a pending node's time counts for nothing); Known is false
// when there was no such time.
type Uptime struct {
	Window  time.Duration
	Percent float64
	Known   bool
	Down    time.Duration // time known and not up
}

// NodeUptime returns a node's uptime over each window.
func (s *Service) NodeUptime(ctx context.Context, nodeID int64, windows ...time.Duration) ([]Uptime, error) {
	out := make([]Uptime, 0, len(windows))
	for _, w := range windows {
		r, err := s.q.NodeUptime(ctx, s.pool, dbsqlc.NodeUptimeParams{NodeID: nodeID, WindowSeconds: w.Seconds()})
		if err != nil {
			return nil, fmt.Errorf("uptime over %s: %w", w, err)
		}
		u := Uptime{Window: w}
		if r.KnownSeconds > 0 {
			u.Known = true
			u.Percent = 100 * r.UpSeconds / r.KnownSeconds
			u.Down = time.Duration((r.KnownSeconds - r.UpSeconds) * float64(time.Second))
		}
		out = append(out, u)
	}
	return out, nil
}

// ProbeBuckets returns a node's probe results over the last window in
// buckets of the given size.
func (s *Service) ProbeBuckets(ctx context.Context, nodeID int64, window, bucket time.Duration) ([]dbsqlc.ProbeResultBucketsRow, error) {
	return s.q.ProbeResultBuckets(ctx, s.pool, dbsqlc.ProbeResultBucketsParams{
		NodeID: nodeID, WindowSeconds: window.Seconds(), BucketSeconds: bucket.Seconds(),
	})
}

// Incidents lists the nodes failing now (down or suspect and not
// disabled) with the work they carry, at most limit of them.
func (s *Service) Incidents(ctx context.Context, limit int32) ([]dbsqlc.NodeIncidentsRow, error) {
	return s.q.NodeIncidents(ctx, s.pool, limit)
}

// Page is where a page of a long table starts: the sort column and
// direction, and the cursor (the previous page's last sort key and id;
// AfterID 0 is the first page).
type Page struct {
	Sort     string
	Desc     bool
	AfterKey string
	AfterID  int64
	Limit    int32
}

func (p Page) limit() int32 {
	if p.Limit <= 0 || p.Limit > 1000 {
		return 50
	}
	return p.Limit
}

// EventFilter narrows the events table.
type EventFilter struct {
	Node, Severity, Q string
}

// EventSorts are the columns the events table sorts by ("time" is the
// default, newest first).
var EventSorts = []string{"time", "severity", "node", "type", "actor"}

// Severities are the event severities.
var Severities = []string{"info", "warning", "critical"}

// EventPage returns one page of events.
func (s *Service) EventPage(ctx context.Context, f EventFilter, p Page) ([]dbsqlc.EventPageRow, error) {
	if f.Severity != "" && !slices.Contains(Severities, f.Severity) {
		return nil, problem.FieldErrors{"severity": "severity must be one of " + strings.Join(Severities, ", ")}
	}
	return s.q.EventPage(ctx, s.pool, dbsqlc.EventPageParams{
		Sort: p.Sort, NodeName: f.Node, Severity: f.Severity, Q: f.Q,
		AfterID: p.AfterID, Descending: p.Desc, AfterKey: p.AfterKey, Lim: p.limit(),
	})
}

// AuditSorts are the columns the audit table sorts by.
var AuditSorts = []string{"time", "actor", "action", "target", "result", "source"}

// AuditResults are the results an audit row records.
var AuditResults = []string{"ok", "error", "throttled"}

// AuditPage returns one page of the audit log.
func (s *Service) AuditPage(ctx context.Context, q, result string, p Page) ([]dbsqlc.AuditPageRow, error) {
	if result != "" && !slices.Contains(AuditResults, result) {
		return nil, problem.FieldErrors{"result": "result must be one of " + strings.Join(AuditResults, ", ")}
	}
	return s.q.AuditPage(ctx, s.pool, dbsqlc.AuditPageParams{
		Sort: p.Sort, Result: result, Q: q, AfterID: p.AfterID, Descending: p.Desc, AfterKey: p.AfterKey, Lim: p.limit(),
	})
}

// WorkSorts are the columns the work table sorts by.
var WorkSorts = []string{"time", "ref", "kind", "cost", "state", "node", "epoch", "updated"}

// WorkPage returns one page of work items; an unknown node name is
// ErrNotFound and a bad kind or state a problem.FieldErrors.
func (s *Service) WorkPage(ctx context.Context, f WorkFilter, p Page) ([]dbsqlc.WorkPageRow, error) {
	nodeID, err := s.workFilterNode(ctx, f)
	if err != nil {
		return nil, err
	}
	return s.q.WorkPage(ctx, s.pool, dbsqlc.WorkPageParams{
		Sort: p.Sort, NodeID: nodeID, Kind: f.Kind, State: f.State, Q: f.Q,
		AfterID: p.AfterID, Descending: p.Desc, AfterKey: p.AfterKey, Lim: p.limit(),
	})
}

// MaxCapacity is the capacity of the largest registered node of a node
// kind, 0 when there is none.
func (s *Service) MaxCapacity(ctx context.Context, nodeKind string) (int, error) {
	c, err := s.q.NodeMaxCapacity(ctx, s.pool, nodeKind)
	return int(c), err
}
