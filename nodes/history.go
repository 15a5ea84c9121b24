package nodes

import (
	"context"
	"fmt"
	"time"

	"github.com/callplane/callplane/db/dbsqlc"
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
func (s *Service) LoadHistory(ctx context.Context, nodeID int64, window time.Duration) ([]LoadSample, error) {
	rows, err := s.q.LoadSampleListByNode(ctx, s.pool, dbsqlc.LoadSampleListByNodeParams{NodeID: nodeID, WindowSeconds: window.Seconds()})
	return fromRows(rows, func(r dbsqlc.LoadSampleListByNodeRow) LoadSample { return LoadSample(r) }), err
}

// LoadSample is a node's load at a minute: units used, capacity, the load
// its agent reported and whether it could take work.
type LoadSample struct {
	At       time.Time
	Used     int32
	Capacity int32
	Reported int32
	Eligible bool
}

// KindHistory returns the work-per-kind samples over the last window.
func (s *Service) KindHistory(ctx context.Context, window time.Duration) ([]KindSample, error) {
	rows, err := s.q.KindSampleList(ctx, s.pool, window.Seconds())
	return fromRows(rows, func(r dbsqlc.KindSample) KindSample { return KindSample(r) }), err
}

// KindSample is the live work of a kind at a minute: items, units and
// items waiting unplaced.
type KindSample struct {
	At      time.Time
	Kind    string
	Items   int64
	Units   int64
	Waiting int64
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
func (s *Service) ProbeBuckets(ctx context.Context, nodeID int64, window, bucket time.Duration) ([]ProbeBucket, error) {
	rows, err := s.q.ProbeResultBuckets(ctx, s.pool, dbsqlc.ProbeResultBucketsParams{
		NodeID: nodeID, WindowSeconds: window.Seconds(), BucketSeconds: bucket.Seconds(),
	})
	return fromRows(rows, func(r dbsqlc.ProbeResultBucketsRow) ProbeBucket { return ProbeBucket(r) }), err
}

// ProbeBucket sums a node's probes over a span of time: passes, failures,
// and the mean and longest latency in microseconds.
type ProbeBucket struct {
	Bucket time.Time
	Oks    int64
	Fails  int64
	AvgUs  int64
	MaxUs  int64
}

// Incidents lists the nodes failing now (down or suspect and not
// disabled) with the work they carry, at most limit of them.
func (s *Service) Incidents(ctx context.Context, limit int32) ([]Incident, error) {
	rows, err := s.q.NodeIncidents(ctx, s.pool, limit)
	return fromRows(rows, func(r dbsqlc.NodeIncidentsRow) Incident { return Incident(r) }), err
}

// InMaintenance reports whether the failing node is in maintenance at now.
func (i Incident) InMaintenance(now time.Time) bool {
	return inMaintenance(i.MaintenanceUntil, now)
}

// Incident is a node failing now, with the work it carries.
type Incident struct {
	ID               int64
	Name             string
	Kind             string
	Health           string
	HealthChangedAt  time.Time
	LastProbeDetail  string
	AdminState       string
	Flapping         bool
	MaintenanceUntil *time.Time
	LastHeartbeatAt  *time.Time
	EnrolledAt       *time.Time
	ConsecutiveFail  int32
	Items            int64
	Units            int64
}

// MaxCapacity is the capacity of the largest registered node of a node
// kind, 0 when there is none.
func (s *Service) MaxCapacity(ctx context.Context, nodeKind string) (int, error) {
	c, err := s.q.NodeMaxCapacity(ctx, s.pool, nodeKind)
	return int(c), err
}
