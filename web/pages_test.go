package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/callplane/callplane/server/servertest"
)

func TestViewerSeesNoActions(t *testing.T) {
	t.Parallel()
	in := start(t)
	viewer := in.User(t, "viewer@example.com", "viewer")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	markUp(t, in, "m1")
	place(t, in, "call", "c1", 1)
	if _, err := in.Nodes().CreateJoinToken(context.Background(), actorTest, "m1", 0); err != nil {
		t.Fatal(err)
	}
	in.APIToken(t)

	pages := map[string][]string{
		"/":         {"dashboard-kinds"},
		"/nodes":    {"node-row-m1"},
		"/nodes/m1": {"node-live", "work-c1"},
		"/tokens":   {"join-tokens", "api-tokens"},
		"/work":     {"work-c1"},
		"/events":   {"events"},
	}
	forbidden := []string{"register-node", "node-actions", "action-disabled", "edit-node", "maint-form", "join-form", "rotate-credential", "revoke-join-token", "revoke-api-token", "api-token-form", "work-form", "end-work"}
	for path, want := range pages {
		r := in.Get(t, viewer, path)
		wantStatus(t, r, http.StatusOK, "viewer "+path)
		for _, id := range want {
			if !hasTestID(r.Body, id) {
				t.Errorf("viewer %s: lacks %s", path, id)
			}
		}
		for _, id := range forbidden {
			if hasTestID(r.Body, id) {
				t.Errorf("viewer %s: shows %s", path, id)
			}
		}
	}
	posts := map[string]url.Values{
		"/nodes":                {"name": {"x1"}, "kind": {"media"}, "address": {"127.0.0.1:5060"}, "capacity": {"1"}},
		"/nodes/m1":             {"address": {"127.0.0.1:5060"}, "capacity": {"1"}},
		"/nodes/m1/state":       {"state": {"disabled"}},
		"/nodes/m1/remove":      {"move": {"1"}},
		"/nodes/m1/maintenance": {"action": {"end"}},
		"/nodes/m1/rotate":      nil,
		"/nodes/m1/tokens":      {"ttl": {"1h"}},
		"/apitokens":            {"name": {"x"}},
		"/work":                 {"kind": {"call"}, "ref": {"v1"}, "cost": {"1"}},
		"/work/c1/end":          nil,
	}
	for path, form := range posts {
		if r := in.PostForm(t, viewer, path, form); r.StatusCode != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d", path, r.StatusCode)
		}
	}
	for _, path := range []string{"/nodes/new", "/nodes/m1/edit", "/nodes/m1/preview?state=disabled"} {
		if r := in.Get(t, viewer, path); r.StatusCode != http.StatusForbidden {
			t.Errorf("viewer GET %s: %d", path, r.StatusCode)
		}
	}
	if count(t, in, "SELECT count(*) FROM nodes WHERE admin_state = 'enabled'") != 1 || count(t, in, "SELECT count(*) FROM work WHERE state = 'assigned'") != 1 {
		t.Fatal("a viewer changed the cluster")
	}
}

func TestHTMXGetsTheComponentAlone(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)

	live := map[string]string{
		"/":         `id="dashboard"`,
		"/nodes":    `id="nodes-table"`,
		"/nodes/m1": `id="node-live"`,
		"/tokens":   `id="join-tokens"`,
		"/work":     `id="work-live"`,
		"/events":   `id="events"`,
	}
	for path, id := range live {
		full := in.Get(t, admin, path)
		wantStatus(t, full, http.StatusOK, "full "+path)
		if !strings.Contains(full.Body, "<html") || !strings.Contains(full.Body, `<div id="flash"></div>`) || !strings.Contains(full.Body, id) {
			t.Errorf("full %s: not a whole page with a flash slot and %s", path, id)
		}
		part := in.HTMX(t, admin, http.MethodGet, path, nil)
		wantStatus(t, part, http.StatusOK, "htmx "+path)
		if strings.Contains(part.Body, "<html") || strings.Contains(part.Body, "topbar") || !strings.HasPrefix(strings.TrimSpace(part.Body), "<div "+id) {
			t.Errorf("htmx %s: not the component alone:\n%s", path, snippet(part.Body))
		}
		if !strings.Contains(part.Body, `hx-trigger="every `) {
			t.Errorf("htmx %s: the component does not refresh itself", path)
		}
		if strings.Contains(part.Body, `style="`) {
			t.Errorf("%s: inline style breaks the CSP", path)
		}
	}
	// An error in an htmx request goes to the flash slot.
	r := in.HTMX(t, admin, http.MethodGet, "/nodes/nope", nil)
	if r.StatusCode != http.StatusNotFound || r.Header.Get("HX-Retarget") != "#flash" {
		t.Fatalf("htmx missing node: %d %q", r.StatusCode, r.Header.Get("HX-Retarget"))
	}
}

func TestAPITokens(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")

	r := in.HTMX(t, admin, http.MethodPost, "/apitokens", url.Values{"name": {""}})
	wantStatus(t, r, http.StatusUnprocessableEntity, "API token without name")
	if !hasTestID(r.Body, "error-name") || count(t, in, "SELECT count(*) FROM api_tokens") != 0 {
		t.Fatal("API token without a name: no message, or a row written")
	}
	r = in.HTMX(t, admin, http.MethodPost, "/apitokens", url.Values{"name": {"provisioning"}})
	wantStatus(t, r, http.StatusOK, "create API token")
	tok, _ := servertest.TestID(r.Body, "api-token-value")
	if !strings.HasPrefix(tok, "cpa_") || !hasTestID(r.Body, "api-token-warning") || strings.Contains(r.Body, "<html") {
		t.Fatalf("created API token %q not shown once in the component", tok)
	}
	if _, err := in.Nodes().AuthAPIToken(context.Background(), tok); err != nil {
		t.Fatalf("shown API token does not authenticate: %v", err)
	}
	page := in.Get(t, admin, "/tokens")
	if strings.Contains(page.Body, tok) {
		t.Fatal("/tokens shows the API token secret again")
	}
	id := strings.TrimPrefix(tok[:strings.Index(tok, ".")], "cpa_")
	if !hasTestID(page.Body, "api-token-cpa_"+id) || !hasTestID(page.Body, "revoke-api-token") {
		t.Fatal("/tokens does not list the API token with a revoke button")
	}
	r = in.HTMX(t, admin, http.MethodPost, "/apitokens/"+id+"/revoke", nil)
	wantStatus(t, r, http.StatusOK, "revoke API token")
	if !strings.Contains(r.Body, ">revoked<") || hasTestID(r.Body, "revoke-api-token") {
		t.Fatal("revoked API token still shown active")
	}
	if _, err := in.Nodes().AuthAPIToken(context.Background(), tok); err == nil {
		t.Fatal("revoked API token still authenticates")
	}
	if auditCount(t, in, "apitoken.create", "ok") != 1 || auditCount(t, in, "apitoken.revoke", "ok") != 1 {
		t.Fatal("API token changes not audited")
	}
}

func TestDashboardCounts(t *testing.T) {
	t.Parallel()
	in := start(t)
	viewer := in.User(t, "viewer@example.com", "viewer")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	in.AddNode(t, "m2", "media", "127.0.0.1:5061", 30)
	in.AddNode(t, "m3", "media", "127.0.0.1:5062", 5)
	in.AddNode(t, "i1", "ivr", "127.0.0.1:5070", 10)
	markUp(t, in, "m1")
	exec(t, in, "UPDATE nodes SET health = 'down' WHERE name = 'm2'")
	exec(t, in, "UPDATE nodes SET health = 'suspect' WHERE name = 'm3'")
	if _, _, err := in.Nodes().SetAdminState(context.Background(), actorTest, "i1", "disabled"); err != nil {
		t.Fatal(err)
	}
	place(t, in, "call", "c1", 4)
	place(t, in, "meeting", "room-1", 1) // no meeting node: waits unplaced

	r := in.HTMX(t, viewer, http.MethodGet, "/", nil)
	wantStatus(t, r, http.StatusOK, "dashboard")
	want := map[string]string{
		"kind-media-up": "1", "kind-media-down": "1", "kind-media-suspect": "1", "kind-media-disabled": "0",
		"kind-ivr-disabled": "1", "kind-ivr-up": "0", "kind-meeting-unplaced": "1", "kind-media-unplaced": "0",
		"kind-media-placed": "1 call", "kind-im-up": "0",
	}
	for id, v := range want {
		if got, ok := servertest.TestID(r.Body, id); !ok || got != v {
			t.Errorf("%s = %q, want %q", id, got, v)
		}
	}
	for _, k := range []string{"media", "ivr", "queue", "meeting", "im"} {
		if !hasTestID(r.Body, "kind-"+k) {
			t.Errorf("no card for %s", k)
		}
	}
	if !strings.Contains(r.Body, "4 / 45") {
		t.Error("media load / capacity not shown")
	}
	if !hasTestID(r.Body, "event-unplaced") || !hasTestID(r.Body, "event-node") {
		t.Error("dashboard lacks the latest events")
	}
	if n := strings.Count(r.Body, `<tr data-testid="event-`); n > 15 {
		t.Errorf("dashboard shows %d events, want at most 15", n)
	}
	if l, _ := servertest.TestID(r.Body, "dashboard-leader"); l == "" {
		t.Error("dashboard does not say who leads")
	}
}

func TestWorkPage(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	in.AddNode(t, "q1", "queue", "127.0.0.1:5070", 10)
	markUp(t, in, "m1", "q1")

	r := in.HTMX(t, admin, http.MethodPost, "/work", url.Values{"kind": {"call"}, "ref": {"call-1"}, "cost": {"2"}})
	wantStatus(t, r, http.StatusOK, "place work")
	if msg, _ := servertest.TestID(r.Body, "alert-success"); !strings.Contains(msg, "call-1 on m1") {
		t.Fatalf("place notice %q", msg)
	}
	r = in.PostForm(t, admin, "/work", url.Values{"kind": {"queue"}, "ref": {"sales.queue"}, "cost": {"1"}})
	wantStatus(t, r, http.StatusSeeOther, "plain place")

	bad := []struct {
		form  url.Values
		field string
	}{
		{url.Values{"kind": {"fax"}, "ref": {"x1"}, "cost": {"1"}}, "kind"},
		{url.Values{"kind": {"call"}, "ref": {""}, "cost": {"1"}}, "ref"},
		{url.Values{"kind": {"call"}, "ref": {"has space"}, "cost": {"1"}}, "ref"},
		{url.Values{"kind": {"call"}, "ref": {"x2"}, "cost": {"0"}}, "cost"},
		{url.Values{"kind": {"call"}, "ref": {"x3"}, "cost": {"abc"}}, "cost"},
		{url.Values{"kind": {"call"}, "ref": {"x4"}, "cost": {"20000"}}, "cost"},
		{url.Values{"kind": {"call"}, "ref": {"call-1"}, "cost": {"1"}}, "ref"},
	}
	for _, b := range bad {
		r := in.HTMX(t, admin, http.MethodPost, "/work", b.form)
		wantStatus(t, r, http.StatusUnprocessableEntity, "bad work "+b.form.Encode())
		if !hasTestID(r.Body, "error-"+b.field) || !strings.Contains(r.Body, `id="work-form"`) {
			t.Errorf("bad work %s: no error for %s", b.form.Encode(), b.field)
		}
	}
	if n := count(t, in, "SELECT count(*) FROM work"); n != 2 {
		t.Fatalf("%d work rows after invalid placements, want 2", n)
	}
	page := in.Get(t, admin, "/work")
	for _, id := range []string{"work-call-1", "work-sales.queue", "work-form", "end-work"} {
		if !hasTestID(page.Body, id) {
			t.Errorf("work page lacks %s", id)
		}
	}
	if c, _ := servertest.TestID(page.Body, "count-call-assigned"); c != "1" {
		t.Errorf("assigned calls %q", c)
	}
	// Filters.
	if f := in.Get(t, admin, "/work?node=q1"); hasTestID(f.Body, "work-call-1") || !hasTestID(f.Body, "work-sales.queue") {
		t.Error("node filter does not filter")
	}
	if f := in.Get(t, admin, "/work?q=call"); !hasTestID(f.Body, "work-call-1") || hasTestID(f.Body, "work-sales.queue") {
		t.Error("ref search does not filter")
	}
	if f := in.HTMX(t, admin, http.MethodGet, "/work?kind=queue&state=assigned", nil); hasTestID(f.Body, "work-call-1") || !strings.Contains(f.Body, `hx-get="/work?kind=queue&amp;state=assigned"`) {
		t.Errorf("kind/state filter not applied or not kept:\n%s", snippet(f.Body))
	}
	// End a ref with punctuation in it (refs hold no '/': issue 16).
	r = in.HTMX(t, admin, http.MethodPost, "/work/sales.queue/end", url.Values{"node": {"q1"}})
	wantStatus(t, r, http.StatusOK, "end work")
	if !strings.Contains(r.Body, `id="work-live"`) || !strings.Contains(r.Body, `hx-get="/work?node=q1"`) {
		t.Fatal("end: want the live region keeping the filters")
	}
	if count(t, in, "SELECT count(*) FROM work WHERE ref = 'sales.queue' AND state = 'ended'") != 1 || liveOn(t, in, "q1") != 0 {
		t.Fatal("work not ended")
	}
	if r := in.PostForm(t, admin, "/work/nope/end", nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("end missing work: %d", r.StatusCode)
	}
	// Work with no room waits unplaced, and the form says so.
	r = in.HTMX(t, admin, http.MethodPost, "/work", url.Values{"kind": {"im"}, "ref": {"shard-1"}, "cost": {"1"}})
	if msg, _ := servertest.TestID(r.Body, "alert-success"); !strings.Contains(msg, "waits unplaced") {
		t.Fatalf("unplaced notice %q", msg)
	}
	if !strings.Contains(in.Get(t, admin, "/work").Body, `data-testid="count-im-unplaced"><span class="badge sev-critical">1</span>`) {
		t.Error("unplaced count not shown")
	}
}

func TestEventsPage(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	in.AddNode(t, "i1", "ivr", "127.0.0.1:5070", 10)
	if _, _, err := in.Nodes().SetAdminState(context.Background(), actorTest, "i1", "draining"); err != nil {
		t.Fatal(err)
	}
	r := in.Get(t, admin, "/events")
	wantStatus(t, r, http.StatusOK, "events")
	if strings.Count(r.Body, `data-testid="event-node"`) != 2 || !hasTestID(r.Body, "event-admin") {
		t.Fatalf("events page lacks the events:\n%s", snippet(r.Body))
	}
	if !strings.Contains(r.Body, `<a href="/nodes/m1">m1</a>`) || !strings.Contains(r.Body, "sev-info") {
		t.Error("events lack node links or severity badges")
	}
	if f := in.HTMX(t, admin, http.MethodGet, "/events?node=i1", nil); strings.Contains(f.Body, "Node m1") || !strings.Contains(f.Body, "Node i1 set to draining") {
		t.Errorf("node filter:\n%s", snippet(f.Body))
	}
	if f := in.HTMX(t, admin, http.MethodGet, "/events?q=draining", nil); hasTestID(f.Body, "event-node") || !hasTestID(f.Body, "event-admin") {
		t.Error("search does not filter")
	}
	if f := in.HTMX(t, admin, http.MethodGet, "/events?q=nothing-matches", nil); !hasTestID(f.Body, "empty") {
		t.Error("no empty message")
	}
}
