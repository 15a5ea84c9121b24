package web_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/callplane/callplane/server/servertest"
)

func TestWorkChangesInThePortalAreAudited(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.AddNode(t, "q1", "queue", "127.0.0.1:5070", 10)
	if _, err := in.Pool().Exec(t.Context(), "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())"); err != nil {
		t.Fatal(err)
	}
	c := in.User(t, "admin@example.com", "admin")
	if r := in.PostForm(t, c, "/work", url.Values{"kind": {"queue"}, "ref": {"sales"}, "cost": {"2"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("place: %d", r.StatusCode)
	}
	if r := in.PostForm(t, c, "/work/sales/end", nil); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("end: %d", r.StatusCode)
	}
	var n int
	if err := in.Pool().QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE actor = 'admin@example.com'
		AND target = 'sales' AND action IN ('work.place', 'work.end') AND source_addr = '127.0.0.1'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("work audit rows: %d %v", n, err)
	}
}

// A live region that polls after the session ended is sent to sign in.
func TestHTMXPollAfterSignOutRedirects(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.User(t, "someone@example.com", "viewer")
	anon := in.Client(t)
	r := in.HTMX(t, anon, "GET", "/nodes", nil)
	if r.StatusCode != http.StatusNoContent || r.Header.Get("HX-Redirect") != "/login" {
		t.Fatalf("htmx poll without a session: %d, HX-Redirect %q", r.StatusCode, r.Header.Get("HX-Redirect"))
	}
	// A plain request still gets the redirect to the sign-in page.
	if r := in.Get(t, anon, "/nodes"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("plain request without a session: %d", r.StatusCode)
	}
}
