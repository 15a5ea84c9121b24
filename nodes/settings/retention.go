package settings

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// Retention settings: how long history is kept before the leader prunes
// it (nodes.Service.Prune). They are stored in the settings table like
// the health settings, saved from their own form.
const (
	KeyRetentionWork   = "retention_work"   // ended work items
	KeyRetentionEvents = "retention_events" // the event log
	KeyRetentionAudit  = "retention_audit"  // the audit log
	KeyRetentionAlerts = "retention_alerts" // sent or failed alerts (pending ones are never pruned)
	KeyRetentionProbes = "retention_probes" // probe results
)

// RetentionKeys lists the retention settings in display order.
var RetentionKeys = []string{KeyRetentionWork, KeyRetentionEvents, KeyRetentionAudit, KeyRetentionAlerts, KeyRetentionProbes}

// Bounds of a retention period.
const (
	MinRetention = 10 * time.Minute
	MaxRetention = 10 * 365 * 24 * time.Hour
)

// Retention says how long each kind of history is kept, by setting key.
type Retention map[string]time.Duration

// DefaultRetention keeps ended work a week, events and alerts 90 days, the
// audit log a year and probe results an hour.
func DefaultRetention() Retention {
	return Retention{
		KeyRetentionWork:   7 * 24 * time.Hour,
		KeyRetentionEvents: 90 * 24 * time.Hour,
		KeyRetentionAudit:  365 * 24 * time.Hour,
		KeyRetentionAlerts: 90 * 24 * time.Hour,
		KeyRetentionProbes: time.Hour,
	}
}

// PruneAges is the retention as the domain's pruning takes it. (Probe
// results are pruned by a statement that reads their period from the
// settings table itself, so the health checker's own pruning agrees.)
func (r Retention) PruneAges() nodes.PruneAges {
	return nodes.PruneAges{Work: r[KeyRetentionWork], Events: r[KeyRetentionEvents], Audit: r[KeyRetentionAudit], Alerts: r[KeyRetentionAlerts]}
}

// FormatRetention writes a period for people and for the settings table:
// whole days as "90d", else a Go duration ("1h0m0s" as "1h").
func FormatRetention(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	s = strings.TrimSuffix(s, "0m")
	return s
}

// ParseRetention reads a period: "90d", "36h", "30m".
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("use whole days (90d) or a duration (36h)")
		}
		return time.Duration(days) * 24 * time.Hour, checkRetention(time.Duration(days) * 24 * time.Hour)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("use whole days (90d) or a duration (36h)")
	}
	return d, checkRetention(d)
}

func checkRetention(d time.Duration) error {
	switch {
	case d < MinRetention:
		return fmt.Errorf("keep history at least %s", FormatRetention(MinRetention))
	case d > MaxRetention:
		return fmt.Errorf("keep history at most %s", FormatRetention(MaxRetention))
	case d%time.Second != 0:
		return fmt.Errorf("use whole seconds")
	}
	return nil
}

// sqlInterval is the period as stored: Postgres reads it as an interval
// (the probe-result prune casts the stored value).
func sqlInterval(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + " seconds"
}

// Retention returns the retention periods in force: the defaults
// overridden by what was saved. A saved value that no longer parses
// falls back to its default.
func (s *Store) Retention(ctx context.Context) (Retention, error) {
	rows, err := db.Q.SettingList(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("load retention settings: %w", err)
	}
	r := DefaultRetention()
	for _, row := range rows {
		if _, known := r[row.Key]; !known {
			continue
		}
		// Stored as "N seconds" (see sqlInterval).
		if n, ok := strings.CutSuffix(row.Value, " seconds"); ok {
			if secs, err := strconv.ParseInt(n, 10, 64); err == nil && checkRetention(time.Duration(secs)*time.Second) == nil {
				r[row.Key] = time.Duration(secs) * time.Second
			}
		}
	}
	return r, nil
}

// SaveRetention validates and stores the retention periods of form (keys
// RetentionKeys, values such as "90d" or "36h"; an absent or empty one
// keeps its value) with an audit row, in one transaction. Invalid input
// is problem.FieldErrors naming each field and saves nothing.
func (s *Store) SaveRetention(ctx context.Context, actor nodes.Actor, form map[string]string) (Retention, error) {
	cur, err := s.Retention(ctx)
	if err != nil {
		return nil, err
	}
	next := Retention{}
	fe := problem.FieldErrors{}
	for _, k := range RetentionKeys {
		v, ok := form[k]
		if !ok || strings.TrimSpace(v) == "" {
			next[k] = cur[k]
			continue
		}
		d, err := ParseRetention(v)
		if err != nil {
			fe.Add(k, err.Error())
			continue
		}
		next[k] = d
	}
	if err := fe.Err(); err != nil {
		return nil, err
	}
	var changes []string
	for _, k := range RetentionKeys {
		if next[k] != cur[k] {
			changes = append(changes, fmt.Sprintf("%s: %s -> %s", k, FormatRetention(cur[k]), FormatRetention(next[k])))
		}
	}
	detail := strings.Join(changes, "; ")
	if detail == "" {
		detail = "no change"
	}
	values := map[string]string{}
	for _, k := range RetentionKeys {
		values[k] = sqlInterval(next[k])
	}
	if err := s.write(ctx, actor, RetentionKeys, values, "settings.retention", "settings", detail); err != nil {
		return nil, err
	}
	return next, nil
}
