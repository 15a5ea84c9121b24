package server_test

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestDomainConflictAnswers409 drives conflicts of the domain through the
// real router: an error of kind conflict answers 409 on the portal (page
// and htmx) and on the JSON API alike, with the same message, and changes
// nothing. The conflict is told by its kind, not its text: a taken node
// name comes from Postgres's unique violation through db.Translate.
func TestDomainConflictAnswers409(t *testing.T) {
	t.Parallel()
	in := cluster(t, 10, "k1", "k2")
	place(t, in, "call", "c-1", 1)
	place(t, in, "call", "c-2", 1)
	admin := in.User(t, "admin@example.com", "admin")
	tok := in.APIToken(t)
	const busy = "node still carries work"

	// Removing a node that carries work without moving it (nodes.ErrBusy).
	r := in.PostForm(t, admin, "/nodes/k1/remove", nil)
	if r.StatusCode != http.StatusConflict || !strings.Contains(r.Body, busy) {
		t.Fatalf("portal remove of a busy node: %d, want 409 saying %q:\n%.600s", r.StatusCode, busy, r.Body)
	}
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/k1/remove", url.Values{})
	if r.StatusCode != http.StatusConflict || !strings.Contains(r.Body, busy) {
		t.Fatalf("portal (htmx) remove of a busy node: %d, want 409 saying %q:\n%.600s", r.StatusCode, busy, r.Body)
	}
	r, m := api(t, in, http.MethodDelete, "/api/v1/nodes/k1", tok, nil)
	if r.StatusCode != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), busy) {
		t.Fatalf("API remove of a busy node: %d %s, want 409 saying %q", r.StatusCode, r.Body, busy)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'k1'"); n != 1 {
		t.Fatal("a busy node was removed")
	}

	// A taken node name: the API answers 409, the portal's form shows the
	// same message at the name field (422, as any form with errors).
	const taken = `a node named "k2" already exists`
	r, m = api(t, in, http.MethodPost, "/api/v1/nodes", tok, map[string]any{"name": "k2", "kind": "media", "address": "127.0.0.1:5999", "capacity": 5})
	if r.StatusCode != http.StatusConflict || m["error"] != "name: "+taken {
		t.Fatalf("API add of a taken name: %d %s, want 409 %q", r.StatusCode, r.Body, "name: "+taken)
	}
	r = in.PostForm(t, admin, "/nodes", url.Values{"name": {"k2"}, "kind": {"media"}, "address": {"127.0.0.1:5998"}, "capacity": {"5"}, "weight": {"1"}})
	if r.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(html.UnescapeString(r.Body), taken) {
		t.Fatalf("portal add of a taken name: %d, want 422 saying %q:\n%.600s", r.StatusCode, taken, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes"); n != 2 {
		t.Fatalf("%d nodes after refused adds, want 2", n)
	}

	// A work ref in use (db.ErrConflict from the insert).
	r, m = api(t, in, http.MethodPost, "/api/v1/work", tok, map[string]any{"kind": "call", "ref": "c-1", "cost": 1})
	if r.StatusCode != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "already exists") {
		t.Fatalf("API place of a ref in use: %d %s, want 409", r.StatusCode, r.Body)
	}
}
