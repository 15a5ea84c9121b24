package web_test

import (
	"context"
	"encoding/csv"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server/servertest"
)

// rowsOf counts the rows of a table page by their data-testid prefix.
func rowsOf(body, prefix string) int { return strings.Count(body, `data-testid="`+prefix) }

var nextHref = regexp.MustCompile(`data-testid="(?:event|audit|work)-next"`)

// linkOf returns the href of the element with the data-testid, unescaped.
func linkOf(t *testing.T, body, id string) string {
	t.Helper()
	re := regexp.MustCompile(`href="([^"]*)"[^>]*data-testid="` + regexp.QuoteMeta(id) + `"`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link %s in\n%s", id, snippet(body))
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

func TestEventsSortPageAndExport(t *testing.T) {
	t.Parallel()
	in := start(t)
	viewer := in.User(t, "viewer@example.com", "viewer")
	// 130 events: more than two pages, with one whose message a
	// spreadsheet would run as a formula.
	exec(t, in, `INSERT INTO events (node_name, type, severity, message, actor)
		SELECT 'n' || (i % 3), 'test', CASE WHEN i % 10 = 0 THEN 'critical' ELSE 'info' END, 'event ' || i, 'tester'
		FROM generate_series(1, 129) AS i`)
	exec(t, in, `INSERT INTO events (node_name, type, severity, message, actor) VALUES ('n1', 'test', 'warning', '=HYPERLINK("x")', 'tester')`)
	total := count(t, in, "SELECT count(*) FROM events")

	r := in.Get(t, viewer, "/events")
	if got := rowsOf(r.Body, "event-"+"test\""); got != 50 {
		t.Fatalf("first page: %d rows, want 50", got)
	}
	seen := map[string]bool{}
	page := r.Body
	pages := 0
	for {
		pages++
		for _, m := range regexp.MustCompile(`<td class="wrap">([^<]*)</td>`).FindAllStringSubmatch(page, -1) {
			if seen[m[1]] {
				t.Fatalf("row %q on two pages", m[1])
			}
			seen[m[1]] = true
		}
		if !nextHref.MatchString(page) {
			break
		}
		next := linkOf(t, page, "event-next")
		page = in.Get(t, viewer, next).Body
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != total || pages != 3 {
		t.Fatalf("paged through %d of %d events in %d pages", len(seen), total, pages)
	}

	// Sorted by severity, most severe first, filters kept in every link.
	r = in.Get(t, viewer, "/events?sort=severity&dir=desc&q=event")
	first := regexp.MustCompile(`<span class="badge sev-(\w+)">`).FindStringSubmatch(r.Body)
	if first == nil || first[1] != "critical" {
		t.Fatalf("severity desc starts with %v", first)
	}
	if next := linkOf(t, r.Body, "event-next"); !strings.Contains(next, "sort=severity") || !strings.Contains(next, "q=event") || !strings.Contains(next, "dir=desc") {
		t.Fatalf("next link loses the view: %s", next)
	}
	if !strings.Contains(r.Body, `aria-sort="descending"`) {
		t.Error("sorted column not marked")
	}
	// The live region polls the same view.
	if !strings.Contains(r.Body, `hx-get="/events?dir=desc&amp;q=event&amp;sort=severity"`) {
		t.Errorf("live region does not keep the view:\n%s", snippet(r.Body))
	}

	// CSV: every row, with a header, formula cells defused.
	r = in.Get(t, viewer, "/events?format=csv")
	if r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") ||
		!strings.Contains(r.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("csv: %d %s %s", r.StatusCode, r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"))
	}
	recs, err := csv.NewReader(strings.NewReader(r.Body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != total+1 || strings.Join(recs[0], ",") != "time,severity,node,type,message,actor" {
		t.Fatalf("csv has %d records (want %d), header %v", len(recs), total+1, recs[0])
	}
	if !strings.Contains(r.Body, `'=HYPERLINK`) {
		t.Error("a formula cell is exported as a formula")
	}
	// Filtered CSV.
	r = in.Get(t, viewer, "/events?format=csv&severity=critical")
	if recs, _ := csv.NewReader(strings.NewReader(r.Body)).ReadAll(); len(recs) != 12+1 {
		t.Fatalf("critical csv: %d records", len(recs))
	}
	// Bad input names the field.
	if r := in.Get(t, viewer, "/events?after=not-a-cursor!"); r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "after") {
		t.Fatalf("bad cursor: %d", r.StatusCode)
	}
	if r := in.Get(t, viewer, "/events?format=csv&severity=loud"); r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "severity") {
		t.Fatalf("bad severity csv: %d", r.StatusCode)
	}
	// A history restore (the back button) gets the whole page.
	req, _ := http.NewRequest(http.MethodGet, in.URL+"/events?sort=type", nil)
	req.Header.Set("HX-Request", "true")
	req.Header.Set("HX-History-Restore-Request", "true")
	if r := in.Do(t, viewer, req); !strings.Contains(r.Body, "<html") {
		t.Fatal("history restore got a fragment")
	}
}

func TestAuditAndWorkTablesPageAndExport(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	exec(t, in, `INSERT INTO audit_log (actor, action, target, result, detail)
		SELECT 'a' || (i % 4) || '@example.com', 'test.action', 't' || i, CASE WHEN i % 5 = 0 THEN 'error' ELSE 'ok' END, ''
		FROM generate_series(1, 120) AS i`)
	audits := count(t, in, "SELECT count(*) FROM audit_log")
	r := in.Get(t, admin, "/audit")
	if got := rowsOf(r.Body, "audit-row"); got != 50 {
		t.Fatalf("audit first page: %d", got)
	}
	r = in.Get(t, admin, linkOf(t, r.Body, "audit-next"))
	if got := rowsOf(r.Body, "audit-row"); got != 50 || !hasTestID(r.Body, "audit-first") {
		t.Fatalf("audit second page: %d rows", got)
	}
	r = in.Get(t, admin, "/audit?format=csv")
	recs, _ := csv.NewReader(strings.NewReader(r.Body)).ReadAll()
	if len(recs) != audits+1 {
		t.Fatalf("audit csv %d records, want %d", len(recs), audits+1)
	}
	r = in.Get(t, admin, "/audit?result=error&sort=target&dir=asc")
	if got := rowsOf(r.Body, "audit-row"); got != 24 || strings.Contains(r.Body, "result-ok") {
		t.Fatalf("audit result filter: %d rows", got)
	}

	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 1000)
	markUp(t, in, "m1")
	for i := 0; i < 75; i++ {
		place(t, in, "call", "call-"+itoa(int64(1000+i)), 1+i%7)
	}
	r = in.Get(t, admin, "/work?sort=cost&dir=desc")
	if got := rowsOf(r.Body, "work-call-"); got != 50 {
		t.Fatalf("work first page: %d", got)
	}
	costs := regexp.MustCompile(`<td>(\d+)</td><td><span class="badge`).FindAllStringSubmatch(r.Body, -1)
	if len(costs) == 0 || costs[0][1] != "7" || costs[len(costs)-1][1] > costs[0][1] {
		t.Fatalf("work not sorted by cost desc: %v", costs[:min(3, len(costs))])
	}
	r = in.Get(t, admin, linkOf(t, r.Body, "work-next"))
	if got := rowsOf(r.Body, "work-call-"); got != 25 || hasTestID(r.Body, "work-next") {
		t.Fatalf("work last page: %d rows", got)
	}
	r = in.Get(t, admin, "/work?format=csv&node=m1")
	recs, _ = csv.NewReader(strings.NewReader(r.Body)).ReadAll()
	if len(recs) != 76 || recs[1][4] != "m1" {
		t.Fatalf("work csv: %d records", len(recs))
	}
	if r := in.Get(t, admin, "/work?format=csv&node=nope"); r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "node") {
		t.Fatalf("work csv unknown node: %d", r.StatusCode)
	}
}

func TestIncidentBannerAndDiagnosis(t *testing.T) {
	t.Parallel()
	in := start(t)
	viewer := in.User(t, "viewer@example.com", "viewer")
	in.AddNode(t, "ivr-1", "ivr", "127.0.0.1:5070", 10)
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	markUp(t, in, "ivr-1", "m1")
	place(t, in, "ivr", "ivr-a", 2)
	place(t, in, "ivr", "ivr-b", 3)
	exec(t, in, "UPDATE nodes SET enrolled_at = now(), last_heartbeat_at = now() WHERE name IN ('ivr-1', 'm1')")

	// Nothing fails: no banner content, the dashboard says all clear.
	r := in.Get(t, viewer, "/")
	if !hasTestID(r.Body, "incident-banner") || hasTestID(r.Body, "incident-headline") || !hasTestID(r.Body, "no-incidents") {
		t.Fatalf("calm cluster shows an incident:\n%s", snippet(r.Body))
	}
	if d, _ := servertest.TestID(in.Get(t, viewer, "/nodes/m1").Body, "diagnosis-title"); !strings.HasPrefix(d, "Healthy") {
		t.Fatalf("healthy node diagnosis %q", d)
	}

	exec(t, in, `UPDATE nodes SET health = 'down', health_changed_at = now() - interval '5 minutes',
		consecutive_fail = 3, last_probe_detail = 'SIP OPTIONS: no answer within 500ms' WHERE name = 'ivr-1'`)
	for _, path := range []string{"/", "/nodes", "/events", "/work", "/audit", "/tokens", "/settings", "/account"} {
		r := in.Get(t, viewer, path)
		if h, _ := servertest.TestID(r.Body, "incident-headline"); h != "1 node down" {
			t.Errorf("%s: banner headline %q", path, h)
		}
	}
	r = in.HTMX(t, viewer, http.MethodGet, "/incidents/banner", nil)
	if strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, `id="incident-banner"`) || !strings.Contains(r.Body, `hx-trigger="every 5s"`) {
		t.Fatalf("banner poll: %s", snippet(r.Body))
	}
	for _, want := range []string{`href="/nodes/ivr-1"`, "for 5m", "SIP OPTIONS: no answer within 500ms", "2 IVRs (5 units) stay on it until it is disabled (manual failover)"} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("banner lacks %q:\n%s", want, snippet(r.Body))
		}
	}
	r = in.Get(t, viewer, "/")
	if !hasTestID(r.Body, "incident-row-ivr-1") || !strings.Contains(r.Body, "Disable the node to move its work") {
		t.Fatalf("dashboard incident list:\n%s", snippet(r.Body))
	}
	r = in.Get(t, viewer, "/nodes/ivr-1")
	d, _ := servertest.TestID(r.Body, "diagnosis-title")
	if !strings.HasPrefix(d, "Down for 5m: SIP OPTIONS") {
		t.Fatalf("down node diagnosis %q", d)
	}
	if !strings.Contains(r.Body, "Disable the node to move its 2 IVRs") || strings.Index(r.Body, "node-diagnosis") > strings.Index(r.Body, "node-service") {
		t.Fatal("the node page does not lead with what to do")
	}
	// Work waiting unplaced is an incident too.
	exec(t, in, "UPDATE nodes SET admin_state = 'disabled' WHERE name = 'm1'")
	place(t, in, "call", "c-wait", 1)
	r = in.HTMX(t, viewer, http.MethodGet, "/incidents/banner", nil)
	if !hasTestID(r.Body, "waiting-call") || !strings.Contains(r.Body, "1 call") {
		t.Fatalf("waiting work not in the banner:\n%s", snippet(r.Body))
	}
}

func TestNodeAndDashboardCharts(t *testing.T) {
	t.Parallel()
	in := start(t)
	viewer := in.User(t, "viewer@example.com", "viewer")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	markUp(t, in, "m1")
	place(t, in, "call", "c1", 4)
	ctx := context.Background()
	var id int64
	if err := in.Pool().QueryRow(ctx, "SELECT id FROM nodes WHERE name = 'm1'").Scan(&id); err != nil {
		t.Fatal(err)
	}
	// Probes over the last 30 minutes, one failing minute among them.
	exec(t, in, `INSERT INTO probe_results (node_id, at, ok, latency_us, detail)
		SELECT $1, now() - make_interval(mins => i), i <> 10, 1000 + i * 100, 'test'
		FROM generate_series(1, 30) AS i`, id)
	// Health: down for 6 of the last 24 hours.
	exec(t, in, "DELETE FROM node_health_history WHERE node_id = $1", id)
	exec(t, in, `INSERT INTO node_health_history (node_id, at, health) VALUES
		($1, now() - interval '30 hours', 'up'), ($1, now() - interval '12 hours', 'down'), ($1, now() - interval '6 hours', 'up')`, id)
	// Two load samples: one written by the sampler now, one an hour ago.
	exec(t, in, `INSERT INTO load_samples (node_id, at, used, capacity, reported, eligible) VALUES ($1, now() - interval '1 hour', 2, 10, 1, true)`, id)
	exec(t, in, `INSERT INTO kind_samples (at, kind, items, units, waiting) VALUES (now() - interval '1 hour', 'call', 3, 3, 0)`)
	if err := in.Nodes().SampleLoad(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, in, "SELECT count(*) FROM load_samples WHERE node_id = $1", id); n != 2 {
		t.Fatalf("load samples: %d", n)
	}
	if err := in.Nodes().SampleLoad(ctx); err != nil { // the same minute again adds nothing
		t.Fatal(err)
	}
	if n := count(t, in, "SELECT count(*) FROM load_samples WHERE node_id = $1", id); n != 2 {
		t.Fatalf("load samples after a second sample in the minute: %d", n)
	}

	r := in.HTMX(t, viewer, http.MethodGet, "/nodes/m1", nil) // the live region carries the charts
	for _, id := range []string{"chart-latency", "chart-success", "chart-load", "uptime-24h", "uptime-7d"} {
		if !hasTestID(r.Body, id) {
			t.Errorf("node live region lacks %s", id)
		}
	}
	if !hasTestID(r.Body, "chart-threshold") || !strings.Contains(r.Body, "timeout 500 ms") {
		t.Error("latency chart without the timeout marked")
	}
	if got := strings.Count(r.Body, `class="cbar s-ok"`); got != 29 {
		t.Errorf("success chart: %d all-passed minutes, want 29", got)
	}
	if got := strings.Count(r.Body, `class="cbar s-bad"`); got != 1 {
		t.Errorf("success chart: %d failed minutes, want 1", got)
	}
	if s, _ := servertest.TestID(r.Body, "chart-success-summary"); s != "29 of 30 probes passed in the last hour (96.7 %)." {
		t.Errorf("success summary %q", s)
	}
	if s, _ := servertest.TestID(r.Body, "chart-load-summary"); !strings.HasPrefix(s, "Now 4 of 10 units placed (40 %)") {
		t.Errorf("load summary %q", s)
	}
	if u, _ := servertest.TestID(r.Body, "uptime-24h-value"); u != "75.00 %" {
		t.Errorf("uptime 24h %q, want 75.00 %%", u)
	}
	if u, _ := servertest.TestID(r.Body, "uptime-7d-value"); !strings.HasPrefix(u, "80.") {
		t.Errorf("uptime 7d %q, want 80.x %% (6 h down of 30 h known)", u)
	}

	r = in.HTMX(t, viewer, http.MethodGet, "/", nil)
	if s, _ := servertest.TestID(r.Body, "chart-work-now-summary"); !strings.Contains(s, "call 1") {
		t.Errorf("work-now summary %q", s)
	}
	if !hasTestID(r.Body, "chart-work-trend") || strings.Count(r.Body, `class="line s-kind-call"`) != 1 {
		t.Errorf("work trend chart missing its call line")
	}
	if strings.Contains(r.Body, "style=") {
		t.Error("a chart uses an inline style, which the CSP forbids")
	}
}

func TestJoinTokenEndsAtEnrolment(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	ctx := context.Background()
	a, err := in.Nodes().CreateJoinToken(ctx, actorTest, "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := in.Nodes().CreateJoinToken(ctx, actorTest, "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Nodes().Enroll(ctx, nodes.EnrollRequest{Token: a.Token, RemoteAddr: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	// The other token made before the enrolment no longer works.
	if _, err := in.Nodes().Enroll(ctx, nodes.EnrollRequest{Token: b.Token, RemoteAddr: "127.0.0.1"}); err == nil {
		t.Fatal("a second token replaced the enrolled agent")
	}
	if n := count(t, in, "SELECT count(*) FROM join_tokens WHERE id = $1 AND revoked_at IS NOT NULL", b.ID); n != 1 {
		t.Fatal("the other token was not ended at enrolment")
	}
	// A new token for an enrolled node must be asked for as a replacement.
	r := in.HTMX(t, admin, http.MethodPost, "/nodes/m1/tokens", url.Values{"ttl": {"1h"}})
	wantStatus(t, r, http.StatusUnprocessableEntity, "token for an enrolled node")
	if !strings.Contains(r.Body, "already enrolled") || !hasTestID(r.Body, "join-replace") || hasTestID(r.Body, "join-command") {
		t.Fatalf("refusal does not offer the replacement:\n%s", snippet(r.Body))
	}
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/tokens", url.Values{"ttl": {"1h"}, "replace": {"1"}})
	wantStatus(t, r, http.StatusOK, "replacement token")
	if !hasTestID(r.Body, "join-command") || !strings.Contains(r.Body, "replaces the running one") {
		t.Fatalf("replacement token not shown:\n%s", snippet(r.Body))
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE action = 'token.create' AND detail LIKE '%replaces the enrolled agent'"); n != 1 {
		t.Fatal("replacement not audited as such")
	}
}

func TestAccountPasswordAndSessions(t *testing.T) {
	t.Parallel()
	in := start(t)
	me := in.User(t, "Viewer@Example.com", "viewer")
	other := in.Client(t)
	if r := in.PostForm(t, other, "/login", url.Values{"email": {"VIEWER@example.COM"}, "password": {servertest.Password}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in with another case: %d", r.StatusCode)
	}
	// The same address in another case is the same account.
	if _, err := in.Auth().AddUser(context.Background(), "test", "local", "viewer@example.com", servertest.Password, "viewer"); err == nil {
		t.Fatal("a second account for the same address in another case")
	}
	if n := count(t, in, "SELECT count(*) FROM users WHERE email = 'viewer@example.com'"); n != 1 {
		t.Fatal("address not stored in lower case")
	}
	r := in.Get(t, me, "/account")
	if !hasTestID(r.Body, "password-form") || strings.Count(r.Body, "<li>") < 2 {
		t.Fatalf("account page:\n%s", snippet(r.Body))
	}
	if hasTestID(r.Body, "nav-users") {
		t.Error("a viewer sees the Users link")
	}
	// A wrong current password is refused, naming the field, and audited.
	r = in.HTMX(t, me, http.MethodPost, "/account/password", url.Values{"current": {"wrong"}, "password": {"a new long password"}, "confirm": {"a new long password"}})
	wantStatus(t, r, http.StatusUnprocessableEntity, "wrong current password")
	if m, _ := servertest.TestID(r.Body, "error-current"); m == "" {
		t.Fatal("no error on the current password")
	}
	if auditCount(t, in, "user.password", "error") != 1 {
		t.Fatal("refused password change not audited")
	}
	r = in.HTMX(t, me, http.MethodPost, "/account/password", url.Values{"current": {servertest.Password}, "password": {"a new long password"}, "confirm": {"a new long password"}})
	wantStatus(t, r, http.StatusOK, "password change")
	if m, _ := servertest.TestID(r.Body, "alert-success"); !strings.Contains(m, "1 other session signed out") {
		t.Fatalf("notice %q", m)
	}
	// The other session ended; this one goes on; the new password works.
	if r := in.Get(t, other, "/"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("other session still works: %d", r.StatusCode)
	}
	if r := in.Get(t, me, "/"); r.StatusCode != http.StatusOK {
		t.Fatalf("own session ended: %d", r.StatusCode)
	}
	if r := in.PostForm(t, in.Client(t), "/login", url.Values{"email": {"viewer@example.com"}, "password": {"a new long password"}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("new password: %d", r.StatusCode)
	}
	if auditCount(t, in, "user.password", "ok") != 1 {
		t.Fatal("password change not audited")
	}
	// Sign out the other sessions.
	r = in.HTMX(t, me, http.MethodPost, "/account/sessions/end-others", nil)
	if m, _ := servertest.TestID(r.Body, "alert-success"); !strings.HasPrefix(m, "1 other session signed out") {
		t.Fatalf("end others: %q", m)
	}
	if auditCount(t, in, "user.sessions.end", "ok") != 1 {
		t.Fatal("ending sessions not audited")
	}
}
