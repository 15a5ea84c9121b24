package nodes_test

import (
	"testing"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

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

	store := settings.NewStore(e.pool, settings.Defaults{}, "", nil)
	r, err := store.Retention(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pruned, err := e.svc.Prune(e.ctx, r.PruneAges())
	if err != nil {
		t.Fatal(err)
	}
	if want := (nodes.Pruned{Work: 1, Events: 1, Audit: 1, Alerts: 1, Probes: 1}); pruned != want {
		t.Errorf("pruned %+v, want %+v", pruned, want)
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
	if _, err := store.SaveRetention(e.ctx, actor, map[string]string{settings.KeyRetentionProbes: "3h"}); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO probe_results (node_id, ok, latency_us, detail, at) SELECT id, true, 1, 'x', now() - interval '2 hours' FROM nodes")
	r, _ = store.Retention(e.ctx)
	if pruned, _ := e.svc.Prune(e.ctx, r.PruneAges()); pruned.Probes != 0 {
		t.Fatal("a 2-hour-old probe result was pruned under a 3-hour retention")
	}
}
