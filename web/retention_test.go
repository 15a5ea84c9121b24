package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/callplane/callplane/server/servertest"
)

func TestRetentionForm(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	page := in.Get(t, admin, "/settings")
	wantStatus(t, page, http.StatusOK, "settings")
	if !hasTestID(page.Body, "retention-form") || !strings.Contains(page.Body, `value="90d"`) {
		t.Fatal("the settings page lacks the retention form with its defaults")
	}
	r := in.HTMX(t, admin, http.MethodPost, "/settings/retention", url.Values{"retention_events": {"forever"}})
	if r.StatusCode != http.StatusUnprocessableEntity || strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, "use whole days") {
		t.Fatalf("bad retention: %d\n%s", r.StatusCode, snippet(r.Body))
	}
	r = in.HTMX(t, admin, http.MethodPost, "/settings/retention", url.Values{"retention_events": {"30d"}})
	wantStatus(t, r, http.StatusOK, "save retention")
	if msg, _ := servertest.TestID(r.Body, "alert-success"); !strings.Contains(msg, "Retention saved") || !strings.Contains(r.Body, `value="30d"`) {
		t.Fatalf("saved retention:\n%s", snippet(r.Body))
	}
	viewer := in.User(t, "viewer@example.com", "viewer")
	if r := in.HTMX(t, viewer, http.MethodPost, "/settings/retention", url.Values{"retention_events": {"1d"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("a viewer changed retention: %d", r.StatusCode)
	}
}
