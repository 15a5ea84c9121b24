package nodes_test

import (
	"errors"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

func TestRetentionSettings(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r, err := e.svc.Retention(e.ctx)
	if err != nil || r[nodes.KeyRetentionAudit] != 365*24*time.Hour || r[nodes.KeyRetentionProbes] != time.Hour {
		t.Fatalf("defaults: %v %v", r, err)
	}
	var fe problem.FieldErrors
	_, err = e.svc.SaveRetention(e.ctx, actor, map[string]string{nodes.KeyRetentionEvents: "soon", nodes.KeyRetentionAudit: "1m"})
	if !errors.As(err, &fe) || fe[nodes.KeyRetentionEvents] == "" || fe[nodes.KeyRetentionAudit] == "" {
		t.Fatalf("bad input: %v", err)
	}
	if e.count("SELECT count(*) FROM settings WHERE key LIKE 'retention_%'") != 0 {
		t.Fatal("invalid input saved something")
	}
	if _, err := e.svc.SaveRetention(e.ctx, actor, map[string]string{nodes.KeyRetentionEvents: "30d", nodes.KeyRetentionProbes: "36h"}); err != nil {
		t.Fatal(err)
	}
	r, _ = e.svc.Retention(e.ctx)
	if r[nodes.KeyRetentionEvents] != 30*24*time.Hour || r[nodes.KeyRetentionProbes] != 36*time.Hour || r[nodes.KeyRetentionWork] != 7*24*time.Hour {
		t.Fatalf("saved: %v", r)
	}
	if got := nodes.FormatRetention(r[nodes.KeyRetentionEvents]) + " " + nodes.FormatRetention(r[nodes.KeyRetentionProbes]); got != "30d 36h" {
		t.Fatalf("shown as %q", got)
	}
	if e.count("SELECT count(*) FROM audit_log WHERE action = 'settings.retention' AND detail LIKE '%retention_events: 90d -> 30d%'") != 1 {
		t.Fatal("the change is not audited")
	}
}

// Prune deletes exactly the history older than its setting and nothing
// live: running and waiting work, pending alerts and recent rows stay.
func TestPruneByRetention(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 10, 100)
	old := e.place("call", "old", 1)
	e.place("call", "recent", 1)
	e.place("call", "running", 1)
	for _, ref := range []string{"old", "recent"} {
		if _, err := e.svc.EndWork(e.ctx, actor, ref); err != nil {
			t.Fatal(err)
		}
	}
	e.exec("UPDATE work SET ended_at = now() - interval '8 days', created_at = now() - interval '9 days' WHERE id = $1", old.ID)
	e.exec("UPDATE events SET at = now() - interval '100 days' WHERE id = (SELECT min(id) FROM events)")
	e.exec("INSERT INTO audit_log (actor, action, at) VALUES ('x', 'ancient', now() - interval '400 days')")
	e.exec(`INSERT INTO alerts (type, payload, state, created_at) VALUES
		('down', '{}', 'sent', now() - interval '100 days'),
		('down', '{}', 'pending', now() - interval '100 days'),
		('down', '{}', 'sent', now())`)
	e.exec("INSERT INTO probe_results (node_id, ok, latency_us, detail, at) SELECT id, true, 1, 'x', now() - interval '2 hours' FROM nodes")
	e.exec("INSERT INTO probe_results (node_id, ok, latency_us, detail) SELECT id, true, 1, 'x' FROM nodes")
	events := e.count("SELECT count(*) FROM events")

	r, _ := e.svc.Retention(e.ctx)
	pruned, err := e.svc.Prune(e.ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	want := nodes.Pruned{nodes.KeyRetentionWork: 1, nodes.KeyRetentionEvents: 1, nodes.KeyRetentionAudit: 1, nodes.KeyRetentionAlerts: 1, nodes.KeyRetentionProbes: 1}
	for k, n := range want {
		if pruned[k] != n {
			t.Errorf("%s: pruned %d, want %d", k, pruned[k], n)
		}
	}
	if e.count("SELECT count(*) FROM work WHERE ref IN ('recent', 'running')") != 2 || e.count("SELECT count(*) FROM work WHERE ref = 'old'") != 0 {
		t.Error("work pruned wrongly")
	}
	if e.count("SELECT count(*) FROM work_history WHERE work_id = $1", old.ID) != 0 ||
		e.count("SELECT count(*) FROM work_history h JOIN work w ON w.id = h.work_id WHERE w.ref = 'recent'") == 0 {
		t.Error("the history of pruned work must go with it, and only that")
	}
	if e.count("SELECT count(*) FROM events") != events-1 || e.count("SELECT count(*) FROM alerts WHERE state = 'pending'") != 1 {
		t.Error("live rows pruned")
	}
	// The probe period comes from the stored setting: keep them 3 hours.
	if _, err := e.svc.SaveRetention(e.ctx, actor, map[string]string{nodes.KeyRetentionProbes: "3h"}); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO probe_results (node_id, ok, latency_us, detail, at) SELECT id, true, 1, 'x', now() - interval '2 hours' FROM nodes")
	r, _ = e.svc.Retention(e.ctx)
	if pruned, _ := e.svc.Prune(e.ctx, r); pruned[nodes.KeyRetentionProbes] != 0 {
		t.Fatal("a 2-hour-old probe result was pruned under a 3-hour retention")
	}
}
