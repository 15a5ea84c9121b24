package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server/servertest"
)

// start runs a call manager whose health checker stays out of the way:
// these tests set node health themselves, and a checker probing their
// made-up addresses would mark the nodes down under them. The probe
// interval is saved before the instance starts, so its first round (with
// no nodes yet) is followed by an hour of quiet.
func start(t *testing.T) *servertest.Instance {
	t.Helper()
	dbURL := dbtest.URL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO settings (key, value) VALUES ('probe_interval', '1h')"); err != nil {
		t.Fatal(err)
	}
	in := servertest.Start(t, servertest.Options{DatabaseURL: dbURL})
	deadline := time.Now().Add(10 * time.Second)
	for in.LeaderID(ctx) == "" {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // the checker's first round, over no nodes
	return in
}

// count runs a counting query.
func count(t *testing.T, in *servertest.Instance, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := in.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// exec runs a statement, for test fixtures the portal does not own
// (node health is the health checker's job).
func exec(t *testing.T, in *servertest.Instance, sql string, args ...any) {
	t.Helper()
	if _, err := in.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func markUp(t *testing.T, in *servertest.Instance, names ...string) {
	t.Helper()
	exec(t, in, "UPDATE nodes SET health = 'up', health_changed_at = now(), enrolled_at = coalesce(enrolled_at, now()) WHERE name = ANY($1)", names)
}

func place(t *testing.T, in *servertest.Instance, kind, ref string, cost int) nodes.Placement {
	t.Helper()
	p, err := in.Nodes().PlaceWork(context.Background(), nodes.Actor{Name: "test"}, nodes.WorkInput{Kind: kind, Ref: ref, Cost: cost})
	if err != nil {
		t.Fatalf("place %s: %v", ref, err)
	}
	return p
}

func liveOn(t *testing.T, in *servertest.Instance, node string) int {
	t.Helper()
	return count(t, in, `SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id
		WHERE n.name = $1 AND w.state IN ('assigned', 'active')`, node)
}

func wantStatus(t *testing.T, r *servertest.Response, want int, what string) {
	t.Helper()
	if r.StatusCode != want {
		t.Fatalf("%s: status %d, want %d\n%s", what, r.StatusCode, want, snippet(r.Body))
	}
}

func snippet(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}

func hasTestID(body, id string) bool {
	return strings.Contains(body, `data-testid="`+id+`"`)
}

func nodeForm(name, kind, address, capacity, weight string) url.Values {
	return url.Values{"name": {name}, "kind": {kind}, "address": {address}, "capacity": {capacity}, "weight": {weight}, "region": {"eu-west"}, "description": {"test node"}}
}

func TestRegisterNodeOfEachKind(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")

	r := in.Get(t, admin, "/nodes/new")
	wantStatus(t, r, http.StatusOK, "new node form")
	if !hasTestID(r.Body, "node-form") || !hasTestID(r.Body, "address-hint") || !strings.Contains(r.Body, `value="100"`) {
		t.Fatal("new node form lacks the form, the address hints or the default weight")
	}
	addrs := map[string]string{
		"media":   "127.0.0.1:5060",
		"ivr":     "sip:10.0.0.2:5060;transport=tcp",
		"queue":   "queue.example.net:5070",
		"meeting": "https://10.0.0.4:8444/probe",
		"im":      "10.0.0.5:5222",
	}
	for _, kind := range nodes.Kinds {
		name := kind + "-1"
		r := in.PostForm(t, admin, "/nodes", nodeForm(name, kind, addrs[kind], "50", ""))
		wantStatus(t, r, http.StatusSeeOther, "register "+kind)
		if loc := r.Header.Get("Location"); loc != "/nodes/"+name {
			t.Fatalf("register %s: redirect to %q", kind, loc)
		}
	}
	// htmx submissions are told where to go instead.
	r = in.HTMX(t, admin, http.MethodPost, "/nodes", nodeForm("media-2", "media", "127.0.0.1:5062", "10", "200"))
	wantStatus(t, r, http.StatusOK, "register over htmx")
	if r.Header.Get("HX-Redirect") != "/nodes/media-2" {
		t.Fatalf("htmx register: HX-Redirect %q", r.Header.Get("HX-Redirect"))
	}

	list := in.Get(t, admin, "/nodes")
	wantStatus(t, list, http.StatusOK, "node list")
	for _, kind := range nodes.Kinds {
		if !hasTestID(list.Body, "node-row-"+kind+"-1") {
			t.Errorf("node list lacks %s-1", kind)
		}
	}
	if !hasTestID(list.Body, "register-node") || !hasTestID(list.Body, "nodes-table") {
		t.Error("node list lacks the register button or the table")
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE region = 'eu-west' AND description = 'test node'"); n != 6 {
		t.Fatalf("%d nodes stored with region and description, want 6", n)
	}
	if n := count(t, in, "SELECT weight FROM nodes WHERE name = 'media-1'"); n != 100 {
		t.Fatalf("default weight %d", n)
	}
	if n := auditCount(t, in, "node.add", "ok"); n != 6 {
		t.Fatalf("%d node.add audit rows, want 6", n)
	}
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'node' AND message LIKE '%registered by admin@example.com'"); n != 6 {
		t.Fatalf("%d registration events, want 6", n)
	}
	// Filters narrow the list and the live table keeps them.
	f := in.Get(t, admin, "/nodes?kind=meeting")
	if !hasTestID(f.Body, "node-row-meeting-1") || hasTestID(f.Body, "node-row-media-1") {
		t.Fatal("kind filter does not filter")
	}
	if !strings.Contains(f.Body, `hx-get="/nodes?kind=meeting"`) || !strings.Contains(f.Body, `hx-trigger="every 2s"`) {
		t.Fatal("live table does not keep the filter")
	}
	if s := in.Get(t, admin, "/nodes?q=queue.example"); !hasTestID(s.Body, "node-row-queue-1") || hasTestID(s.Body, "node-row-im-1") {
		t.Fatal("search does not find by address")
	}
	if s := in.Get(t, admin, "/nodes?health=up"); hasTestID(s.Body, "node-row-queue-1") || !hasTestID(s.Body, "empty") {
		t.Fatal("health filter does not filter")
	}
}

func TestRegisterNodeValidation(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "dup", "media", "127.0.0.1:5060", 10)

	cases := []struct {
		name  string
		form  url.Values
		field string
	}{
		{"duplicate name", nodeForm("dup", "media", "127.0.0.1:5061", "10", ""), "name"},
		{"bad name", nodeForm("Bad_Name", "media", "127.0.0.1:5061", "10", ""), "name"},
		{"unknown kind", nodeForm("n1", "sbc", "127.0.0.1:5061", "10", ""), "kind"},
		{"bad media address", nodeForm("n1", "media", "http://10.0.0.1/", "10", ""), "address"},
		{"bad ivr address", nodeForm("n1", "ivr", "10.0.0.1", "10", ""), "address"},
		{"bad meeting address", nodeForm("n1", "meeting", "10.0.0.1:8444", "10", ""), "address"},
		{"bad im address", nodeForm("n1", "im", "im.example.net", "10", ""), "address"},
		{"capacity 0", nodeForm("n1", "media", "127.0.0.1:5061", "0", ""), "capacity"},
		{"capacity 1000000", nodeForm("n1", "media", "127.0.0.1:5061", "1000000", ""), "capacity"},
		{"capacity abc", nodeForm("n1", "media", "127.0.0.1:5061", "abc", ""), "capacity"},
		{"weight 0", nodeForm("n1", "media", "127.0.0.1:5061", "10", "0"), "weight"},
		{"weight 5000", nodeForm("n1", "media", "127.0.0.1:5061", "10", "5000"), "weight"},
		{"address of another node", nodeForm("n1", "media", "127.0.0.1:5060", "10", ""), "address"},
		{"another node's socket spelled as a SIP URI", nodeForm("n1", "ivr", "sip:127.0.0.1:5060;transport=udp", "10", ""), "address"},
	}
	for _, tc := range cases {
		r := in.PostForm(t, admin, "/nodes", tc.form)
		wantStatus(t, r, http.StatusUnprocessableEntity, tc.name)
		msg, ok := servertest.TestID(r.Body, "error-"+tc.field)
		if !ok || msg == "" {
			t.Errorf("%s: no message for %s", tc.name, tc.field)
		}
		// The values are kept.
		if !strings.Contains(r.Body, `value="`+tc.form.Get("capacity")+`"`) || !strings.Contains(r.Body, "test node") {
			t.Errorf("%s: form values not kept", tc.name)
		}
		if !strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, `id="flash"`) {
			t.Errorf("%s: plain request did not get the full page", tc.name)
		}
	}
	if msg, _ := servertest.TestID(in.PostForm(t, admin, "/nodes", cases[0].form).Body, "error-name"); !strings.Contains(msg, "already exists") {
		t.Errorf("duplicate name message %q", msg)
	}
	if msg, _ := servertest.TestID(in.PostForm(t, admin, "/nodes", cases[5].form).Body, "error-address"); !strings.Contains(msg, "URL") {
		t.Errorf("meeting address message %q does not say what a meeting address is", msg)
	}
	if msg, _ := servertest.TestID(in.PostForm(t, admin, "/nodes", cases[len(cases)-1].form).Body, "error-address"); !strings.Contains(msg, "node dup already uses") {
		t.Errorf("shared address message %q does not name the node using it", msg)
	}
	// Over htmx the form alone comes back, still 422.
	r := in.HTMX(t, admin, http.MethodPost, "/nodes", cases[7].form)
	wantStatus(t, r, http.StatusUnprocessableEntity, "htmx invalid")
	if strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, `id="node-form"`) || !hasTestID(r.Body, "error-capacity") {
		t.Fatal("htmx invalid form: want the form component alone with the error")
	}
	if n := count(t, in, "SELECT count(*) FROM nodes"); n != 1 {
		t.Fatalf("invalid registrations wrote nodes: %d rows", n)
	}
	if n := auditCount(t, in, "node.add", "ok"); n != 1 {
		t.Fatalf("invalid registrations wrote audit rows: %d", n)
	}
}

func TestEditNode(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)

	r := in.Get(t, admin, "/nodes/m1/edit")
	wantStatus(t, r, http.StatusOK, "edit form")
	if !strings.Contains(r.Body, `value="127.0.0.1:5060"`) || !strings.Contains(r.Body, `value="10"`) {
		t.Fatal("edit form does not show the current values")
	}
	bad := url.Values{"address": {"127.0.0.1:5070"}, "capacity": {"0"}, "weight": {"5000"}}
	r = in.PostForm(t, admin, "/nodes/m1", bad)
	wantStatus(t, r, http.StatusUnprocessableEntity, "invalid edit")
	if !hasTestID(r.Body, "error-capacity") || !hasTestID(r.Body, "error-weight") || !strings.Contains(r.Body, `value="127.0.0.1:5070"`) {
		t.Fatal("invalid edit lacks messages or values")
	}
	if n := count(t, in, "SELECT capacity FROM nodes WHERE name = 'm1'"); n != 10 {
		t.Fatalf("invalid edit changed capacity to %d", n)
	}
	r = in.PostForm(t, admin, "/nodes/m1", url.Values{"address": {"sip:127.0.0.1:5070;transport=tcp"}, "capacity": {"25"}, "weight": {"300"}, "region": {"us-east"}, "description": {"edited"}})
	wantStatus(t, r, http.StatusSeeOther, "edit")
	if r.Header.Get("Location") != "/nodes/m1" {
		t.Fatalf("edit redirect %q", r.Header.Get("Location"))
	}
	var addr, region string
	var capacity, weight int
	if err := in.Pool().QueryRow(context.Background(), "SELECT address, capacity, weight, region FROM nodes WHERE name = 'm1'").Scan(&addr, &capacity, &weight, &region); err != nil {
		t.Fatal(err)
	}
	if addr != "sip:127.0.0.1:5070;transport=tcp" || capacity != 25 || weight != 300 || region != "us-east" {
		t.Fatalf("after edit: %s %d %d %s", addr, capacity, weight, region)
	}
	if auditCount(t, in, "node.update", "ok") != 1 {
		t.Fatal("edit not audited")
	}
	page := in.Get(t, admin, "/nodes/m1")
	if c, _ := servertest.TestID(page.Body, "node-capacity"); c != "25" {
		t.Fatalf("node page capacity %q", c)
	}
	if r := in.Get(t, admin, "/nodes/nope/edit"); r.StatusCode != http.StatusNotFound {
		t.Fatalf("edit of a missing node: %d", r.StatusCode)
	}
}

func TestImpactPreviewAndDisableMovesWork(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	for i, n := range []string{"m1", "m2", "m3"} {
		in.AddNode(t, n, "media", fmt.Sprintf("127.0.0.1:%d", 5060+i), 10)
	}
	markUp(t, in, "m1")
	for _, ref := range []string{"c1", "c2", "c3", "c4"} {
		if p := place(t, in, "call", ref, 1); p.Node != "m1" {
			t.Fatalf("%s placed on %q", ref, p.Node)
		}
	}
	markUp(t, in, "m2", "m3")

	// The node page shows the work, the actions and the live region.
	page := in.Get(t, admin, "/nodes/m1")
	wantStatus(t, page, http.StatusOK, "node page")
	for _, id := range []string{"node-live", "node-actions", "action-disabled", "action-draining", "action-remove", "work-c1", "probes-empty", "maint-form", "join-form", "rotate-credential"} {
		if !hasTestID(page.Body, id) {
			t.Errorf("node page lacks %s", id)
		}
	}
	if !strings.Contains(page.Body, "4 calls (4 units)") {
		t.Errorf("node page does not show what it carries")
	}

	r := in.HTMX(t, admin, http.MethodGet, "/nodes/m1/preview?state=disabled", nil)
	wantStatus(t, r, http.StatusOK, "preview")
	if strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, "<dialog data-autoopen") || !hasTestID(r.Body, "impact-dialog") {
		t.Fatalf("preview over htmx is not the dialog alone:\n%s", snippet(r.Body))
	}
	if c, _ := servertest.TestID(r.Body, "impact-carrying"); !strings.Contains(c, "4 calls") {
		t.Errorf("impact carrying %q", c)
	}
	if c, _ := servertest.TestID(r.Body, "impact-room"); !strings.Contains(c, "2 to m2, 2 to m3") {
		t.Errorf("impact room %q", c)
	}
	for _, d := range []string{"impact-move-m2", "impact-move-m3"} {
		if !hasTestID(r.Body, d) {
			t.Errorf("preview lacks the row %s", d)
		}
	}
	if !strings.Contains(r.Body, "4 calls will move to 2 other media nodes") {
		t.Errorf("impact summary wrong:\n%s", snippet(r.Body))
	}
	if f, _ := servertest.TestID(r.Body, "impact-fits"); f != "fits" {
		t.Errorf("impact fits %q", f)
	}
	if !hasTestID(r.Body, "confirm-state") || !strings.Contains(r.Body, `name="state" value="disabled"`) {
		t.Error("preview lacks the confirm form")
	}
	// Without JavaScript the preview is a page with the dialog open.
	if full := in.Get(t, admin, "/nodes/m1/preview?state=disabled"); !strings.Contains(full.Body, "<html") || !strings.Contains(full.Body, "<dialog data-autoopen open") {
		t.Error("plain preview is not a full page with an open dialog")
	}
	if r := in.HTMX(t, admin, http.MethodGet, "/nodes/m1/preview?state=bogus", nil); r.StatusCode != http.StatusBadRequest {
		t.Errorf("bogus preview state: %d", r.StatusCode)
	}
	// Nothing changed by previewing.
	if liveOn(t, in, "m1") != 4 || auditCount(t, in, "node.disable", "ok") != 0 {
		t.Fatal("preview changed something")
	}

	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/state", url.Values{"state": {"disabled"}})
	wantStatus(t, r, http.StatusOK, "disable")
	if strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, `id="node-live"`) {
		t.Fatal("disable over htmx: want the live region")
	}
	if msg, _ := servertest.TestID(r.Body, "alert-success"); !strings.Contains(msg, "4 calls moved to m2") {
		t.Errorf("disable message %q", msg)
	}
	if liveOn(t, in, "m1") != 0 || liveOn(t, in, "m2")+liveOn(t, in, "m3") != 4 || liveOn(t, in, "m2") == 0 || liveOn(t, in, "m3") == 0 {
		t.Fatalf("after disable: m1=%d m2=%d m3=%d", liveOn(t, in, "m1"), liveOn(t, in, "m2"), liveOn(t, in, "m3"))
	}
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'move' AND node_name = 'm1'"); n != 1 {
		t.Fatalf("%d move events", n)
	}
	if auditCount(t, in, "node.disable", "ok") != 1 {
		t.Fatal("disable not audited")
	}
	if s := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND admin_state = 'disabled'"); s != 1 {
		t.Fatal("m1 not disabled")
	}
	// The events page tells the move.
	if ev := in.Get(t, admin, "/events?node=m1"); !hasTestID(ev.Body, "event-move") {
		t.Fatal("events page lacks the move")
	}

	// A change that does not fit says how much waits.
	in.AddNode(t, "i1", "ivr", "127.0.0.1:5080", 5)
	in.AddNode(t, "i2", "ivr", "127.0.0.1:5081", 1)
	markUp(t, in, "i1")
	for _, ref := range []string{"ivr-a", "ivr-b", "ivr-c"} {
		place(t, in, "ivr", ref, 1)
	}
	markUp(t, in, "i2")
	r = in.HTMX(t, admin, http.MethodGet, "/nodes/i1/preview?state=disabled", nil)
	if f, _ := servertest.TestID(r.Body, "impact-fits"); f != "does not fit" {
		t.Errorf("impact fits %q", f)
	}
	if !strings.Contains(r.Body, "Does not fit: 1 IVR will move to 1 other ivr node and 2 will wait unplaced") {
		t.Errorf("no-fit summary wrong:\n%s", snippet(r.Body))
	}
	// A plain (no JavaScript) confirm redirects back to the node.
	r = in.PostForm(t, admin, "/nodes/i1/state", url.Values{"state": {"disabled"}})
	wantStatus(t, r, http.StatusSeeOther, "plain disable")
	if r.Header.Get("Location") != "/nodes/i1" {
		t.Fatalf("plain disable redirect %q", r.Header.Get("Location"))
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE kind = 'ivr' AND state = 'unplaced'"); n != 2 {
		t.Fatalf("%d unplaced ivr items, want 2", n)
	}
}

func TestDrainEnableRemove(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "d1", "media", "127.0.0.1:5060", 10)
	in.AddNode(t, "d2", "media", "127.0.0.1:5061", 10)
	markUp(t, in, "d1", "d2")

	r := in.HTMX(t, admin, http.MethodGet, "/nodes/d1/preview?state=draining", nil)
	if !strings.Contains(r.Body, "takes no new work") {
		t.Errorf("drain preview:\n%s", snippet(r.Body))
	}
	r = in.PostForm(t, admin, "/nodes/d1/state", url.Values{"state": {"draining"}})
	wantStatus(t, r, http.StatusSeeOther, "drain")
	for _, ref := range []string{"a", "b", "c"} {
		if p := place(t, in, "call", ref, 1); p.Node != "d2" {
			t.Fatalf("work placed on %q while d1 drains", p.Node)
		}
	}
	if auditCount(t, in, "node.drain", "ok") != 1 {
		t.Fatal("drain not audited")
	}
	page := in.Get(t, admin, "/nodes/d1")
	if st, _ := servertest.TestID(page.Body, "admin-state"); st != "draining" {
		t.Fatalf("admin state shown %q", st)
	}
	if hasTestID(page.Body, "action-draining") || !hasTestID(page.Body, "action-enabled") {
		t.Fatal("a draining node should offer enable, not drain")
	}

	r = in.HTMX(t, admin, http.MethodPost, "/nodes/d1/state", url.Values{"state": {"enabled"}})
	wantStatus(t, r, http.StatusOK, "enable")
	if count(t, in, "SELECT count(*) FROM nodes WHERE name = 'd1' AND admin_state = 'enabled'") != 1 || auditCount(t, in, "node.enable", "ok") != 1 {
		t.Fatal("enable did not take")
	}
	if p := place(t, in, "call", "d", 1); p.Node != "d1" {
		t.Fatalf("after enable work went to %q, want the empty d1", p.Node)
	}

	// Removing a node that carries work: the preview says it moves first.
	r = in.HTMX(t, admin, http.MethodGet, "/nodes/d2/preview?state=remove", nil)
	if !strings.Contains(r.Body, `name="move" value="1"`) || !strings.Contains(r.Body, "3 calls will move to 1 other media node") {
		t.Fatalf("remove preview:\n%s", snippet(r.Body))
	}
	r = in.PostForm(t, admin, "/nodes/d2/remove", nil)
	wantStatus(t, r, http.StatusConflict, "remove busy node without move")
	if count(t, in, "SELECT count(*) FROM nodes WHERE name = 'd2'") != 1 {
		t.Fatal("busy node removed without move")
	}
	r = in.PostForm(t, admin, "/nodes/d2/remove", url.Values{"move": {"1"}})
	wantStatus(t, r, http.StatusSeeOther, "remove with move")
	if r.Header.Get("Location") != "/nodes" {
		t.Fatalf("remove redirect %q", r.Header.Get("Location"))
	}
	if count(t, in, "SELECT count(*) FROM nodes WHERE name = 'd2'") != 0 || liveOn(t, in, "d1") != 4 {
		t.Fatalf("after remove: d1 carries %d", liveOn(t, in, "d1"))
	}
	// Removing an idle node, over htmx.
	in.AddNode(t, "d3", "media", "127.0.0.1:5062", 10)
	r = in.HTMX(t, admin, http.MethodGet, "/nodes/d3/preview?state=remove", nil)
	if strings.Contains(r.Body, `name="move"`) || !strings.Contains(r.Body, "carries no work") {
		t.Fatalf("idle remove preview:\n%s", snippet(r.Body))
	}
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/d3/remove", url.Values{})
	wantStatus(t, r, http.StatusOK, "htmx remove")
	if r.Header.Get("HX-Redirect") != "/nodes" {
		t.Fatalf("htmx remove HX-Redirect %q", r.Header.Get("HX-Redirect"))
	}
	if auditCount(t, in, "node.remove", "ok") != 2 {
		t.Fatal("removals not audited")
	}
	if r := in.Get(t, admin, "/nodes/d3"); r.StatusCode != http.StatusNotFound {
		t.Fatalf("removed node page: %d", r.StatusCode)
	}
	list := in.Get(t, admin, "/nodes")
	if hasTestID(list.Body, "node-row-d2") || hasTestID(list.Body, "node-row-d3") || !hasTestID(list.Body, "node-row-d1") {
		t.Fatal("list still shows removed nodes")
	}
}

func TestMaintenanceAndRotation(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)

	until := time.Now().UTC().Add(2 * time.Hour).Format("2006-01-02T15:04")
	r := in.HTMX(t, admin, http.MethodPost, "/nodes/m1/maintenance", url.Values{"until": {until}, "reason": {""}})
	wantStatus(t, r, http.StatusUnprocessableEntity, "maintenance without reason")
	if !hasTestID(r.Body, "error-reason") || strings.Contains(r.Body, "<html") {
		t.Fatal("maintenance form: want the component with the reason error")
	}
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/maintenance", url.Values{"until": {"tomorrow"}, "reason": {"x"}})
	wantStatus(t, r, http.StatusUnprocessableEntity, "maintenance with a bad time")
	if !hasTestID(r.Body, "error-until") {
		t.Fatal("bad time: no until error")
	}
	if count(t, in, "SELECT count(*) FROM maintenance_windows") != 0 {
		t.Fatal("invalid maintenance was stored")
	}
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/maintenance", url.Values{"until": {until}, "reason": {"kernel upgrade"}, "action": {"start"}})
	wantStatus(t, r, http.StatusOK, "start maintenance")
	if !hasTestID(r.Body, "alert-success") || !hasTestID(r.Body, "maint-cancel") {
		t.Fatal("maintenance started: no notice or cancel button")
	}
	if count(t, in, "SELECT count(*) FROM nodes WHERE maintenance_reason = 'kernel upgrade' AND maintenance_until > now()") != 1 {
		t.Fatal("maintenance not in force")
	}
	// A second window, tomorrow: listed as scheduled.
	from := time.Now().UTC().Add(24 * time.Hour).Format("2006-01-02T15:04")
	to := time.Now().UTC().Add(26 * time.Hour).Format("2006-01-02T15:04")
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/maintenance", url.Values{"start": {from}, "until": {to}, "reason": {"disk swap"}})
	wantStatus(t, r, http.StatusOK, "schedule maintenance")
	if !strings.Contains(r.Body, "scheduled") || !strings.Contains(r.Body, "disk swap") {
		t.Fatal("scheduled window not listed")
	}
	page := in.Get(t, admin, "/nodes/m1")
	if m, _ := servertest.TestID(page.Body, "node-maintenance"); !strings.Contains(m, "kernel upgrade") {
		t.Fatalf("node page maintenance %q", m)
	}
	var id int64
	if err := in.Pool().QueryRow(context.Background(), "SELECT id FROM maintenance_windows WHERE reason = 'kernel upgrade'").Scan(&id); err != nil {
		t.Fatal(err)
	}
	r = in.PostForm(t, admin, "/nodes/m1/maintenance", url.Values{"action": {"cancel"}, "id": {strconv.FormatInt(id, 10)}})
	wantStatus(t, r, http.StatusSeeOther, "cancel maintenance")
	if count(t, in, "SELECT count(*) FROM nodes WHERE maintenance_until > now()") != 0 {
		t.Fatal("maintenance not ended")
	}
	if auditCount(t, in, "node.maintenance.add", "ok") != 2 || auditCount(t, in, "node.maintenance.cancel", "ok") != 1 {
		t.Fatal("maintenance not audited")
	}

	// Rotation needs an enrolled agent.
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/rotate", nil)
	wantStatus(t, r, http.StatusUnprocessableEntity, "rotate unenrolled")
	if !hasTestID(r.Body, "alert-error") {
		t.Fatal("rotate unenrolled: no message")
	}
	exec(t, in, "UPDATE nodes SET enrolled_at = now(), agent_version = 'v1' WHERE name = 'm1'")
	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/rotate", nil)
	wantStatus(t, r, http.StatusOK, "rotate")
	if !hasTestID(r.Body, "alert-success") || strings.Contains(r.Body, "<html") {
		t.Fatal("rotate: want the credential component with a notice")
	}
	if count(t, in, "SELECT count(*) FROM nodes WHERE name = 'm1' AND rotate_requested") != 1 {
		t.Fatal("rotation not requested")
	}
}

func TestJoinTokenShownOnce(t *testing.T) {
	t.Parallel()
	in := start(t)
	admin := in.User(t, "admin@example.com", "admin")
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)

	r := in.HTMX(t, admin, http.MethodPost, "/nodes/m1/tokens", url.Values{"ttl": {"forever"}})
	wantStatus(t, r, http.StatusUnprocessableEntity, "bad ttl")
	if count(t, in, "SELECT count(*) FROM join_tokens") != 0 {
		t.Fatal("bad ttl created a token")
	}

	r = in.HTMX(t, admin, http.MethodPost, "/nodes/m1/tokens", url.Values{"ttl": {"24h"}})
	wantStatus(t, r, http.StatusOK, "create join token")
	cmd, ok := servertest.TestID(r.Body, "join-command")
	if !ok {
		t.Fatalf("no join command:\n%s", snippet(r.Body))
	}
	// The command is shown one flag a line, with shell continuations.
	if !strings.Contains(cmd, " \\\n  --token ") {
		t.Errorf("join command not broken before its flags: %q", cmd)
	}
	cmd = strings.ReplaceAll(cmd, " \\\n  --", " --")
	for _, want := range []string{"nodeagent join --server " + in.URL, "--token cpj_", "--ca-pin sha256:", "--state-dir /var/lib/callplane-agent"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("join command %q lacks %q", cmd, want)
		}
	}
	if !hasTestID(r.Body, "join-warning") || !strings.Contains(r.Body, `data-copy="join-command"`) {
		t.Error("join command without the shown-once warning or copy button")
	}
	token := strings.Fields(cmd[strings.Index(cmd, "--token ")+len("--token "):])[0]
	id := strings.TrimPrefix(token[:strings.Index(token, ".")], "cpj_")
	if n := count(t, in, "SELECT count(*) FROM join_tokens WHERE id = $1 AND expires_at > now() + interval '23 hours'", id); n != 1 {
		t.Fatal("token not stored with its lifetime")
	}
	// Shown once: no page shows the secret again.
	for _, p := range []string{"/nodes/m1", "/tokens", "/audit", "/events"} {
		if body := in.Get(t, admin, p).Body; strings.Contains(body, token) {
			t.Fatalf("%s shows the join token secret", p)
		}
	}
	tokens := in.Get(t, admin, "/tokens")
	if !hasTestID(tokens.Body, "join-token-cpj_"+id) || !strings.Contains(tokens.Body, ">active<") {
		t.Fatal("/tokens does not list the active token")
	}
	// Revoke.
	r = in.HTMX(t, admin, http.MethodPost, "/tokens/"+id+"/revoke", nil)
	wantStatus(t, r, http.StatusOK, "revoke")
	if !strings.Contains(r.Body, `id="join-tokens"`) || !strings.Contains(r.Body, ">revoked<") || strings.Contains(r.Body, "<html") {
		t.Fatalf("revoke: want the join token table with the token revoked:\n%s", snippet(r.Body))
	}
	if count(t, in, "SELECT count(*) FROM join_tokens WHERE id = $1 AND revoked_at IS NOT NULL", id) != 1 || auditCount(t, in, "token.revoke", "ok") != 1 {
		t.Fatal("revoke not stored or not audited")
	}
	if r := in.PostForm(t, admin, "/tokens/"+id+"/revoke", nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("revoking twice: %d", r.StatusCode)
	}
	// A revoked token does not enrol.
	if _, err := in.Nodes().Enroll(context.Background(), nodes.EnrollRequest{Token: token, RemoteAddr: "127.0.0.1"}); err == nil {
		t.Fatal("revoked token enrolled")
	}
	// The plain form shows the command in the full page.
	r = in.PostForm(t, admin, "/nodes/m1/tokens", url.Values{"ttl": {"15m"}})
	wantStatus(t, r, http.StatusOK, "plain create")
	if c, _ := servertest.TestID(r.Body, "join-command"); !strings.Contains(c, "--token cpj_") || !strings.Contains(r.Body, "<html") {
		t.Fatal("plain create: no command in a full page")
	}
	if auditCount(t, in, "token.create", "ok") != 2 {
		t.Fatal("token creation not audited")
	}
}

var actorTest = nodes.Actor{Name: "test", Addr: "local"}
