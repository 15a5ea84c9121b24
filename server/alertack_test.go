package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/settings"
)

// downAlertID returns the id of a node's down alert, waiting for it.
func downAlertID(t *testing.T, env *healthEnv, node string) int64 {
	t.Helper()
	var id int64
	waitWithin(t, "down alert of "+node, 15*time.Second, func() bool {
		err := env.pool.QueryRow(context.Background(), `SELECT id FROM alerts WHERE node_name = $1 AND payload->>'to' = 'down'
			ORDER BY id DESC LIMIT 1`, node).Scan(&id)
		return err == nil
	})
	return id
}

// TestAlertAckAndReminders: an administrator acknowledges one down
// node's alert with a note; reminders go out for the other down node
// only; the recovery email of the acknowledged node names who did it.
func TestAlertAckAndReminders(t *testing.T) {
	t.Parallel()
	env := setupHealth(t)
	ep1 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	ep2 := probeEndpoint(t, probe.KindIVR, "127.0.0.1:0")
	in := env.start(t, "cm-ack")
	addNode(t, in, "ivr-1", nodes.KindIVR, ep1.Address(), 10)
	addNode(t, in, "ivr-2", nodes.KindIVR, ep2.Address(), 10)
	waitHealth(t, env.pool, "ivr-1", nodes.HealthUp)
	waitHealth(t, env.pool, "ivr-2", nodes.HealthUp)
	tok := in.APIToken(t)

	_ = ep1.Close()
	_ = ep2.Close()
	waitHealth(t, env.pool, "ivr-1", nodes.HealthDown)
	waitHealth(t, env.pool, "ivr-2", nodes.HealthDown)
	id1 := downAlertID(t, env, "ivr-1")
	downAlertID(t, env, "ivr-2")

	// The alert list shows it, not yet acknowledged.
	r, m := api(t, in, http.MethodGet, "/api/v1/alerts?node=ivr-1", tok, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatal(r.Body)
	}
	if a := m["alerts"].([]any)[0].(map[string]any); a["acked_by"] != nil || a["node"] != "ivr-1" {
		t.Fatalf("listed alert: %v", a)
	}
	path := fmt.Sprintf("/api/v1/alerts/%d/ack", id1)
	if r, m := api(t, in, http.MethodPost, path, tok, map[string]any{"note": " "}); r.StatusCode != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "note") {
		t.Fatalf("ack without a note: %d %s", r.StatusCode, r.Body)
	}
	if r, _ := api(t, in, http.MethodPost, path, tok, map[string]any{"note": "replacing the PSU"}); r.StatusCode != http.StatusOK {
		t.Fatalf("ack: %d %s", r.StatusCode, r.Body)
	}
	if r, _ := api(t, in, http.MethodPost, path, tok, map[string]any{"note": "again"}); r.StatusCode != http.StatusConflict {
		t.Fatalf("second ack: %d", r.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'alert.ack' AND target = 'ivr-1' AND actor = 'api:test'"); n != 1 {
		t.Fatalf("ack audit rows: %d", n)
	}

	// Reminders (the leader's loop, run here at once with a zero
	// interval): one for ivr-2, none for the acknowledged ivr-1.
	epoch, ok := in.Leader().Epoch()
	waitWithin(t, "leadership", 30*time.Second, func() bool { epoch, ok = in.Leader().Epoch(); return ok })
	rem := health.NewReminders(in.Nodes(), health.NewStore(in.Nodes(), env.pool, settings.Defaults{}, "", nil), in.Leader(), nil)
	n, err := rem.Queue(context.Background(), epoch, 0)
	if err != nil || n != 1 {
		t.Fatalf("reminders queued: %d, %v", n, err)
	}
	if c := count(t, in, "SELECT count(*) FROM alerts WHERE payload->>'reminder' = 'true' AND node_name = 'ivr-2'"); c != 1 {
		t.Fatalf("reminders for ivr-2: %d", c)
	}
	waitWithin(t, "reminder email", 15*time.Second, func() bool {
		for _, msg := range env.smtp.Messages() {
			// Alone, or grouped with other alerts under STILL DOWN.
			if strings.Contains(msg.Subject, "ivr-2 (ivr) [reminder: still down]") ||
				strings.Contains(msg.Body, "STILL DOWN: ivr-2") {
				return true
			}
		}
		return false
	})
	for _, msg := range env.smtp.Messages() {
		if strings.Contains(msg.Subject, "ivr-1 (ivr) [reminder") || strings.Contains(msg.Body, "STILL DOWN: ivr-1") {
			t.Fatalf("a reminder for the acknowledged node: %q", msg.Subject)
		}
	}

	// ivr-1 recovers: the recovery email names who acknowledged.
	probeEndpoint(t, probe.KindIVR, ep1.Address())
	waitHealth(t, env.pool, "ivr-1", nodes.HealthUp)
	waitWithin(t, "recovery email naming the acknowledgement", 15*time.Second, func() bool {
		for _, msg := range env.smtp.Messages() {
			if strings.Contains(msg.Subject, "RECOVERED") && strings.Contains(msg.Body, "ivr-1") &&
				strings.Contains(msg.Body, "api:test: replacing the PSU") {
				return true
			}
		}
		return false
	})
	// A recovered node's old alert can no longer be acknowledged.
	if r, _ := api(t, in, http.MethodPost, path, tok, map[string]any{"note": "late"}); r.StatusCode != http.StatusConflict {
		t.Fatalf("ack after recovery: %d", r.StatusCode)
	}
}
