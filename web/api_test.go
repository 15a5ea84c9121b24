package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAPIPage: every role sees the API page with the OpenAPI link and
// the routes; a refused portal action is an audit row naming the actor.
func TestAPIPage(t *testing.T) {
	t.Parallel()
	in := start(t)
	viewer := in.User(t, "viewer@example.com", "viewer")
	r := in.Get(t, viewer, "/api")
	if r.StatusCode != http.StatusOK || !hasTestID(r.Body, "openapi-link") || !strings.Contains(r.Body, "/api/v1/nodes/{name}/maintenance") {
		t.Fatalf("API page: %d", r.StatusCode)
	}
	if r := in.PostForm(t, viewer, "/nodes", url.Values{"name": {"x"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer POST /nodes: %d", r.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'portal.forbidden' AND actor = 'viewer@example.com' AND target = 'POST /nodes' AND result = 'error'"); n != 1 {
		t.Fatalf("refusal audit rows: %d", n)
	}
	// Sign-out rows name who signed out.
	if r := in.PostForm(t, viewer, "/logout", nil); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'logout' AND actor = 'viewer@example.com'"); n != 1 {
		t.Fatalf("logout audit rows naming the actor: %d", n)
	}
}

// TestNodeAckForm: an administrator acknowledges a down node's alert on
// its page, with a note.
func TestNodeAckForm(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	page := in.Get(t, admin, "/nodes/m1")
	if !hasTestID(page.Body, "ack-none") {
		t.Fatal("an up node offers an acknowledgement")
	}
	if _, err := in.Pool().Exec(t.Context(), `UPDATE nodes SET health = 'down', health_changed_at = now() - interval '1 minute' WHERE name = 'm1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Pool().Exec(t.Context(), `INSERT INTO alerts (type, node_name, payload) VALUES ('health', 'm1', '{"node":"m1","from":"suspect","to":"down"}')`); err != nil {
		t.Fatal(err)
	}
	if page = in.Get(t, admin, "/nodes/m1"); !hasTestID(page.Body, "ack-form") {
		t.Fatal("no acknowledgement form for a down node")
	}
	r := in.HTMX(t, admin, http.MethodPost, "/nodes/m1/ack", url.Values{"note": {""}})
	if r.StatusCode != http.StatusUnprocessableEntity || !hasTestID(r.Body, "error-note") {
		t.Fatalf("ack without a note: %d", r.StatusCode)
	}
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/ack", url.Values{"note": {"replacing the PSU"}})
	if r.StatusCode != http.StatusOK || !hasTestID(r.Body, "ack-done") || !strings.Contains(r.Body, "replacing the PSU") {
		t.Fatalf("ack: %d", r.StatusCode)
	}
	if n := count(t, in, "SELECT count(*) FROM alerts WHERE acked_by = 'admin@example.com' AND ack_note = 'replacing the PSU'"); n != 1 {
		t.Fatalf("acknowledged alerts: %d", n)
	}
}
