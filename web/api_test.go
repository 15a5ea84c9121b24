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
