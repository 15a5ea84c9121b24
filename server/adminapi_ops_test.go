package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/server/servertest"
)

// TestAPITokenScopes: a read token reads but every change is refused
// with 403 and an audit row; an expired token is refused; the list shows
// scope, expiry and last use.
func TestAPITokenScopes(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1")
	ctx := context.Background()
	read, err := in.Nodes().CreateScopedAPIToken(ctx, testActor, nodes.APITokenInput{Name: "grafana", Scope: nodes.ScopeRead, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := api(t, in, http.MethodGet, "/api/v1/nodes", read.Token, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("read token GET: %d", r.StatusCode)
	}
	r, m := api(t, in, http.MethodPost, "/api/v1/nodes/m1/disable", read.Token, nil)
	if r.StatusCode != http.StatusForbidden || m["error"] == nil {
		t.Fatalf("read token POST: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE admin_state = 'disabled'"); n != 0 {
		t.Fatal("a read token disabled a node")
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'api.forbidden' AND actor = 'api:grafana' AND result = 'error' AND target = 'POST /api/v1/nodes/m1/disable'"); n != 1 {
		t.Fatalf("refusal audit rows: %d", n)
	}
	// A viewer's session is refused the same way.
	viewer := in.User(t, "viewer@example.com", accounts.RoleViewer)
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/api/v1/nodes/m1/drain", nil)
	req.Header.Set("Origin", in.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp := in.Do(t, viewer, req); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer session POST: %d", resp.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'api.forbidden' AND actor = 'viewer@example.com'"); n != 1 {
		t.Fatalf("viewer refusal audit rows: %d", n)
	}
	// Accounts are the owner's: an admin token is refused.
	adminTok := in.APIToken(t)
	if r, _ := api(t, in, http.MethodGet, "/api/v1/users", adminTok, nil); r.StatusCode != http.StatusForbidden {
		t.Fatalf("admin token GET /users: %d", r.StatusCode)
	}

	// The list shows the scope, the expiry and the last use.
	r, m = api(t, in, http.MethodGet, "/api/v1/api-tokens", adminTok, nil)
	if r.StatusCode != http.StatusOK {
		t.Fatal(r.Body)
	}
	var found bool
	for _, x := range m["api_tokens"].([]any) {
		tok := x.(map[string]any)
		if tok["name"] == "grafana" {
			found = true
			if tok["scope"] != "read" || tok["expires_at"] == nil || tok["last_used_at"] == nil {
				t.Fatalf("listed token: %v", tok)
			}
		}
	}
	if !found {
		t.Fatal("token not listed")
	}

	// Create through the API; bad input names the field and writes nothing.
	r, m = api(t, in, http.MethodPost, "/api/v1/api-tokens", adminTok, map[string]any{"name": "x", "scope": "root"})
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "scope") {
		t.Fatalf("bad scope: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM api_tokens WHERE name = 'x'"); n != 0 {
		t.Fatal("invalid token stored")
	}

	// An expired token is refused.
	exec(t, in, "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE name = 'grafana'")
	if r, _ := api(t, in, http.MethodGet, "/api/v1/nodes", read.Token, nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired token: %d", r.StatusCode)
	}
}

// TestMaintenanceWindows: a window may start later; the node is in
// maintenance (out of placement) only inside it; windows are listed and
// cancellable; bad input names the field and stores nothing.
func TestMaintenanceWindows(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	tok := in.APIToken(t)
	now := time.Now().UTC()

	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"end": now.Add(time.Hour).Format(time.RFC3339)}, "reason"},
		{map[string]any{"end": "tomorrow", "reason": "x"}, "end"},
		{map[string]any{"start": now.Add(2 * time.Hour).Format(time.RFC3339), "end": now.Add(time.Hour).Format(time.RFC3339), "reason": "x"}, "end"},
		{map[string]any{"start": now.Add(-time.Hour).Format(time.RFC3339), "end": now.Add(time.Hour).Format(time.RFC3339), "reason": "x"}, "start"},
	} {
		r, m := api(t, in, http.MethodPost, "/api/v1/nodes/m1/maintenance", tok, c.body)
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), c.field) {
			t.Errorf("%v: %d %s", c.body, r.StatusCode, r.Body)
		}
	}
	if n := count(t, in, "SELECT count(*) FROM maintenance_windows"); n != 0 {
		t.Fatal("invalid window stored")
	}
	if r, _ := api(t, in, http.MethodPost, "/api/v1/nodes/nope/maintenance", tok, map[string]any{"end": now.Add(time.Hour).Format(time.RFC3339), "reason": "x"}); r.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown node: %d", r.StatusCode)
	}

	// A window starting in three seconds: not in maintenance yet.
	start := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	r, m := api(t, in, http.MethodPost, "/api/v1/nodes/m1/maintenance", tok, map[string]any{
		"start": start.Format(time.RFC3339), "end": start.Add(time.Hour).Format(time.RFC3339), "reason": "kernel upgrade"})
	if r.StatusCode != http.StatusCreated || m["active"] != false {
		t.Fatalf("schedule: %d %s", r.StatusCode, r.Body)
	}
	id := int(m["id"].(float64))
	// A second window later the same day.
	if r, _ := api(t, in, http.MethodPost, "/api/v1/nodes/m1/maintenance", tok, map[string]any{
		"start": start.Add(3 * time.Hour).Format(time.RFC3339), "end": start.Add(4 * time.Hour).Format(time.RFC3339), "reason": "disk swap"}); r.StatusCode != http.StatusCreated {
		t.Fatalf("second window: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND maintenance_until > now()"); n != 0 {
		t.Fatal("in maintenance before the window starts")
	}
	_, m = api(t, in, http.MethodGet, "/api/v1/nodes/m1/maintenance", tok, nil)
	if ws := m["maintenance"].([]any); len(ws) != 2 {
		t.Fatalf("listed windows: %v", m)
	}

	// Once it starts (the leader mirrors it within a second), m1 is in
	// maintenance and new work avoids it.
	deadline := time.Now().Add(30 * time.Second)
	for count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND maintenance_until > now()") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the window never took effect")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, m = api(t, in, http.MethodGet, "/api/v1/nodes/m1", tok, nil)
	if m["maintenance"] != true {
		t.Fatalf("node shows no maintenance: %v", m)
	}
	for i := range 4 {
		if p := place(t, in, "call", fmt.Sprintf("mw-%d", i), 1); p.Node != "m2" {
			t.Fatalf("work placed on %s during maintenance", p.Node)
		}
	}
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'maintenance' AND node_name = 'm1' AND message LIKE '%is in maintenance until%'"); n != 1 {
		t.Fatalf("start events: %d", n)
	}

	// Cancelling ends it at once; cancelling twice is a conflict.
	if r, _ := api(t, in, http.MethodDelete, fmt.Sprintf("/api/v1/maintenance/%d", id), tok, nil); r.StatusCode != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND maintenance_until > now()"); n != 0 {
		t.Fatal("still in maintenance after cancelling")
	}
	if r, _ := api(t, in, http.MethodDelete, fmt.Sprintf("/api/v1/maintenance/%d", id), tok, nil); r.StatusCode != http.StatusConflict {
		t.Fatalf("second cancel: %d", r.StatusCode)
	}
	if p := place(t, in, "call", "after", 1); p.Node != "m1" {
		t.Fatalf("after maintenance, work went to %s", p.Node)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action IN ('node.maintenance.add', 'node.maintenance.cancel') AND result = 'ok'"); n != 3 {
		t.Fatalf("maintenance audit rows: %d", n)
	}
	_, m = api(t, in, http.MethodGet, "/api/v1/maintenance", tok, nil)
	if ws := m["maintenance"].([]any); len(ws) != 1 || ws[0].(map[string]any)["reason"] != "disk swap" {
		t.Fatalf("current windows: %v", m)
	}
}

// TestEventsAuditPaging pages through events and the audit log with
// filters and cursors, and shows a work item with its history.
func TestEventsAuditPaging(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "m1", "m2")
	tok := in.APIToken(t)
	for _, st := range []string{"drain", "enable", "drain", "enable", "disable"} {
		if r, _ := api(t, in, http.MethodPost, "/api/v1/nodes/m1/"+st, tok, nil); r.StatusCode != http.StatusOK {
			t.Fatal(r.Body)
		}
	}
	seen := map[float64]bool{}
	cursor := ""
	pages := 0
	for {
		path := "/api/v1/audit?action=node&target=m1&limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r, m := api(t, in, http.MethodGet, path, tok, nil)
		if r.StatusCode != http.StatusOK {
			t.Fatal(r.Body)
		}
		pages++
		for _, x := range m["audit"].([]any) {
			row := x.(map[string]any)
			if !strings.HasPrefix(row["action"].(string), "node.") || row["target"] != "m1" {
				t.Fatalf("filter let through %v", row)
			}
			if seen[row["id"].(float64)] {
				t.Fatal("a row on two pages")
			}
			seen[row["id"].(float64)] = true
		}
		next, ok := m["next_cursor"].(string)
		if !ok {
			break
		}
		cursor = next
	}
	// node.add + five state changes, two per page.
	if len(seen) != 6 || pages < 3 {
		t.Fatalf("paged %d rows in %d pages", len(seen), pages)
	}
	r, m := api(t, in, http.MethodGet, "/api/v1/events?node=m1&type=admin&severity=warning", tok, nil)
	if r.StatusCode != http.StatusOK || len(m["events"].([]any)) != 1 {
		t.Fatalf("events filter: %s", r.Body)
	}
	if r, m := api(t, in, http.MethodGet, "/api/v1/events?since=yesterday", tok, nil); r.StatusCode != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "since") {
		t.Fatalf("bad since: %d %s", r.StatusCode, r.Body)
	}
	// The API's q keeps its meaning on the portal's paging: text in an
	// event's message (not its type), in an audit row's detail or target
	// (not its action).
	if r, m := api(t, in, http.MethodGet, "/api/v1/events?type=admin&q=dmi", tok, nil); r.StatusCode != http.StatusOK || len(m["events"].([]any)) != 0 {
		t.Fatalf("events q matched more than the message: %s", r.Body)
	}
	if r, m := api(t, in, http.MethodGet, "/api/v1/events?type=admin&q=draining", tok, nil); r.StatusCode != http.StatusOK || len(m["events"].([]any)) != 4 {
		t.Fatalf("events q on the message: %s", r.Body)
	}
	if r, m := api(t, in, http.MethodGet, "/api/v1/audit?q=node.", tok, nil); r.StatusCode != http.StatusOK || len(m["audit"].([]any)) != 0 {
		t.Fatalf("audit q matched more than the detail or target: %s", r.Body)
	}
	if r, m := api(t, in, http.MethodGet, "/api/v1/events?severity=loud", tok, nil); r.StatusCode != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "severity") {
		t.Fatalf("bad severity: %d %s", r.StatusCode, r.Body)
	}

	// Work history: placed, moved by a disable, ended.
	place(t, in, "call", "hist-1", 1)
	if r, _ := api(t, in, http.MethodPost, "/api/v1/nodes/m1/enable", tok, nil); r.StatusCode != http.StatusOK {
		t.Fatal(r.Body)
	}
	on := ""
	_, m = api(t, in, http.MethodGet, "/api/v1/work/hist-1", tok, nil)
	on = m["work"].(map[string]any)["node"].(string)
	if r, _ := api(t, in, http.MethodPost, "/api/v1/nodes/"+on+"/disable", tok, nil); r.StatusCode != http.StatusOK {
		t.Fatal(r.Body)
	}
	if r, _ := api(t, in, http.MethodDelete, "/api/v1/work/hist-1", tok, nil); r.StatusCode != http.StatusOK {
		t.Fatal(r.Body)
	}
	r, m = api(t, in, http.MethodGet, "/api/v1/work/hist-1", tok, nil)
	hist := m["history"].([]any)
	if r.StatusCode != http.StatusOK || len(hist) != 3 {
		t.Fatalf("history: %s", r.Body)
	}
	first, moved, ended := hist[0].(map[string]any), hist[1].(map[string]any), hist[2].(map[string]any)
	if first["state"] != "assigned" || first["node"] != on || moved["node"] == on || moved["epoch"].(float64) != first["epoch"].(float64)+1 || ended["state"] != "ended" {
		t.Fatalf("history: %v", hist)
	}
}

// TestRefusedEnrolmentAudited: a refused enrolment is an audit row that
// names the token id, never its secret.
func TestRefusedEnrolmentAudited(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	secret := "0123456789abcdefghijklmnopqrstuvwxyz"
	r, _ := api(t, in, http.MethodPost, "/api/v1/enroll", "", map[string]any{"token": "cpj_abcdefgh." + secret})
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("enrol: %d", r.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'node.enroll' AND result = 'error' AND target = 'cpj_abcdefgh'"); n != 1 {
		t.Fatalf("refused enrolment audit rows: %d", n)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE detail LIKE '%' || $1 || '%' OR target LIKE '%' || $1 || '%'", secret); n != 0 {
		t.Fatal("the token secret reached the audit log")
	}
}
