package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/callplane/callplane/e2e/mailsink"
)

// screensDir is where the browser suite keeps its screenshots (gitignored
// with the rest of e2e/artifacts).
const screensDir = "artifacts/screens"

// shot saves a full-page screenshot of the current page as a test
// artefact and logs where it is.
func (b *browser) shot(name string) {
	b.t.Helper()
	dir := filepath.Join(screensDir, strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatalf("screenshots: %v", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	b.t.Logf("screenshot: %s", abs)
}

// num evaluates a JavaScript expression that gives a number.
func (b *browser) num(what, js string) float64 {
	b.t.Helper()
	s := b.eval(what, "String("+js+")")
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		b.t.Fatalf("%s: %q is not a number", what, s)
	}
	return f
}

// viewport sets the window's size for the page (a phone is 390 wide).
func (b *browser) viewport(w, h int64) {
	b.t.Helper()
	b.run(fmt.Sprintf("viewport %dx%d", w, h), chromedp.EmulateViewport(w, h))
}

// TestPortalViews drives the views of issue 15 in Chromium on a real
// cluster: the incident banner and the node page's diagnosis and charts
// for a node whose agent was killed, the dashboard charts, sortable and
// paged tables with the view in the URL (and the back button), CSV
// export, the join dialog, the account page, a viewer's view, the node
// table on a phone, and forms refused with 4xx that leave no error in
// the console. Every view is saved as a screenshot.
func TestPortalViews(t *testing.T) {
	requireChromium(t)
	c := newCluster(t, 1)
	c.addOwner(ownerEmail, ownerPassword)
	b := newBrowser(t)
	base := c.cms[0].url

	// A wrong password and a form error: refused on the page, nothing in
	// the console (the browser guard fails the test on any error).
	b.open(base+"/login", tid("login-form"))
	b.fill("#f-email", ownerEmail, "#f-password", "not the password")
	b.click(tid("login-submit"))
	b.waitTextHas(tid("alert-error"), "not correct", 20*time.Second)
	b.shot("login-wrong-password")
	b.signIn(base, ownerEmail, ownerPassword)
	b.open(base+"/nodes/new", tid("node-form"))
	b.fill("#f-name", "bad node", "#f-address", "127.0.0.1:5060", "#f-capacity", "0")
	b.click(tid("node-submit"))
	b.waitTextHas(tid("error-capacity"), "at least 1", 20*time.Second)
	b.shot("register-form-errors")
	b.assertClean()

	// Two nodes with real agents: a media node and an IVR node (manual
	// failover), each carrying work.
	specs := []*nodeSpec{
		{name: "media-1", kind: "media", capacity: "200", listen: freeSIP(t)},
		{name: "ivr-1", kind: "ivr", capacity: "10", listen: freeSIP(t)},
	}
	agents := map[string]*agent{}
	for _, s := range specs {
		s.address = s.listen
		c.cli("node", "add", "--name", s.name, "--kind", s.kind, "--address", s.address, "--capacity", s.capacity)
	}
	// The join dialog of the IVR node: the whole command, monospace, copy.
	b.open(base+"/nodes/ivr-1", tid("node-page"))
	b.click(tid("open-join"))
	b.click(tid("create-join-token"))
	b.run("join command", waitVisible(tid("join-command")))
	if f := b.eval("command font", `getComputedStyle(document.querySelector('[data-testid="join-command"]')).fontFamily`); !strings.Contains(f, "monospace") {
		t.Errorf("join command font %q is not monospace", f)
	}
	if ws := b.eval("command wrapping", `getComputedStyle(document.querySelector('[data-testid="join-command"]')).whiteSpace`); ws != "pre" {
		t.Errorf("join command white-space %q: it would wrap mid-word", ws)
	}
	if w := b.num("dialog width", `document.getElementById("join-dialog").getBoundingClientRect().width`); w < 700 {
		t.Errorf("join dialog only %.0f px wide", w)
	}
	cmdText := b.eval("join command text", `document.querySelector('[data-testid="join-command"]').textContent`)
	b.click(tid("copy-join"))
	b.waitText(tid("copy-join"), 10*time.Second, "copy button answers", func(s string) bool { return s == "Copied" || s == "Select and copy" })
	b.shot("join-dialog")
	b.click(tid("close-join"))
	agents["ivr-1"] = c.enrol("ivr-1", cmdText, specs[1].listen)
	agents["media-1"] = c.enrol("media-1", c.cli("token", "create", "--node", "media-1"), specs[0].listen)
	// Single use: the node's agent enrolled, so a plain token is refused.
	b.open(base+"/nodes/ivr-1", tid("node-page"))
	b.waitTextIs(tid("node-live")+" "+tid("health"), "up", 30*time.Second)
	b.click(tid("open-join"))
	b.click(tid("create-join-token"))
	b.waitTextHas(tid("node-join")+" "+tid("alert-error"), "already enrolled", 20*time.Second)
	b.run("replace checkbox", waitVisible(tid("join-replace")))
	b.shot("join-dialog-enrolled-refused")
	b.click(tid("close-join"))

	token := c.cli("apitoken", "create", "--name", "e2e-views")
	for i := 1; i <= 60; i++ {
		kind, ref := "call", fmt.Sprintf("call-%03d", i)
		if i <= 3 {
			kind, ref = "ivr", fmt.Sprintf("ivr-%d", i)
		}
		var out map[string]any
		if st := c.api(c.cms[0], token, "POST", "/api/v1/work", map[string]any{"kind": kind, "ref": ref, "cost": 1 + i%3}, &out); st != 201 {
			t.Fatalf("place %s: %d %v", ref, st, out)
		}
	}

	// A calm cluster: no banner, the dashboard says all clear.
	b.open(base+"/", tid("dashboard-kinds"))
	b.waitTextHas(tid("no-incidents"), "No node is failing", 20*time.Second)
	b.waitTextHas(tid("chart-work-now-summary"), "call 57", 20*time.Second)

	// Kill the IVR agent: the node goes down, its IVRs stay (manual).
	agents["ivr-1"].kill()
	b.waitTextIs(tid("incident-headline"), "1 node down", 60*time.Second)
	b.waitTextHas(tid("incident-ivr-1"), "3 IVRs", 10*time.Second)
	b.waitTextHas(tid("incident-ivr-1"), "until it is disabled", time.Second)
	b.waitTextHas(tid("incident-row-ivr-1"), "Disable the node to move its work", 10*time.Second)
	b.shot("dashboard-incident")
	// The banner is on every page and links to the node.
	for _, p := range []string{"/nodes", "/work", "/events", "/audit", "/settings", "/account"} {
		b.open(base+p, tid("incident-banner"))
		b.waitTextIs(tid("incident-headline"), "1 node down", 20*time.Second)
	}
	b.open(base+"/nodes", tid("nodes-table"))
	b.click(tid("incident-ivr-1") + " a")
	b.run("node page", waitVisible(tid("node-diagnosis")))
	b.waitTextHas(tid("diagnosis-title"), "Down for", 20*time.Second)
	b.waitTextHas(tid("diagnosis-todo"), "Disable the node to move its 3 IVRs", 10*time.Second)
	if top := b.num("diagnosis position", `document.querySelector('[data-testid="node-diagnosis"]').getBoundingClientRect().top`); top > 400 {
		t.Errorf("the diagnosis starts %.0f px down: the node page does not lead with it", top)
	}
	// Charts in the browser: probe latency with the timeout marked, probe
	// success with failed minutes, uptime.
	b.run("charts", waitVisible(tid("chart-latency")+" svg"), waitVisible(tid("chart-success")+" svg"))
	if n := b.num("latency lines", `document.querySelectorAll('[data-testid="chart-latency"] polyline').length`); n != 2 {
		t.Errorf("latency chart has %v lines, want mean and worst", n)
	}
	b.waitTextHas(tid("chart-latency"), "timeout 500 ms", 5*time.Second)
	b.waitText(tid("chart-success"), 20*time.Second, "a failed minute", func(string) bool {
		return b.num("failed bars", `document.querySelectorAll('[data-testid="chart-success"] rect.s-bad, [data-testid="chart-success"] rect.s-partial').length`) > 0
	})
	b.waitText(tid("uptime-24h-value"), 10*time.Second, "24 h uptime below 100 %", func(s string) bool {
		return strings.HasSuffix(s, "%") && s != "100 %"
	})
	if h := b.num("chart height", `document.querySelector('[data-testid="chart-latency"] svg').getBoundingClientRect().height`); h < 100 {
		t.Errorf("latency chart only %.0f px high", h)
	}
	b.shot("node-down")

	// A healthy node's page and its load chart.
	b.open(base+"/nodes/media-1", tid("node-diagnosis"))
	b.waitTextHas(tid("diagnosis-title"), "Healthy", 20*time.Second)
	b.waitTextHas(tid("chart-load-summary"), "units placed", 90*time.Second) // the leader samples once a minute
	b.shot("node-healthy")

	// Tables: sort by a header, the URL keeps it, the back button returns.
	b.open(base+"/work", tid("work-table"))
	b.click(tid("sort-cost"))
	b.waitText("body", 20*time.Second, "URL with the sort", func(string) bool {
		return strings.Contains(b.eval("url", "location.search"), "sort=cost")
	})
	b.run("sorted header", waitVisible(`th[aria-sort="ascending"] `+tid("sort-cost")))
	b.click(tid("work-next"))
	b.waitText("body", 20*time.Second, "URL with the cursor", func(string) bool {
		return strings.Contains(b.eval("url", "location.search"), "after=")
	})
	b.shot("work-page-2")
	b.run("back", chromedp.NavigateBack())
	b.waitText("body", 20*time.Second, "back to the first sorted page", func(string) bool {
		s := b.eval("url", "location.search")
		return strings.Contains(s, "sort=cost") && !strings.Contains(s, "after=")
	})
	b.run("first page after back", waitVisible(tid("work-next")))
	// Column widths do not move when the live region refreshes.
	w1 := b.num("ref column", `document.querySelector('[data-testid="work-table"] th').getBoundingClientRect().width`)
	time.Sleep(3500 * time.Millisecond) // one refresh of the live region (every 3 s); not an assertion on speed
	w2 := b.num("ref column", `document.querySelector('[data-testid="work-table"] th').getBoundingClientRect().width`)
	if w1 != w2 {
		t.Errorf("column width moved from %.1f to %.1f on refresh", w1, w2)
	}
	// CSV of the view, downloaded as a file by the session.
	csvURL := b.eval("csv link", `document.querySelector('[data-testid="export-csv"]').href`)
	if !strings.Contains(csvURL, "format=csv") || !strings.Contains(csvURL, "sort=cost") {
		t.Errorf("CSV link %q does not export the view", csvURL)
	}
	fctx, fcancel := context.WithTimeout(b.ctx, stepTimeout)
	csvBody, err := chromedp.Run(fctx, chromedp.Evaluate[string](`fetch(`+jsString(csvURL)+`).then(r => r.text())`, chromedp.EvalAwaitPromise))
	fcancel()
	if err != nil {
		t.Fatalf("fetch the CSV: %v", err)
	}
	if lines := strings.Count(strings.TrimSpace(csvBody), "\n"); lines != 60 {
		t.Errorf("CSV of the work view has %d rows, want 60", lines)
	}
	b.open(base+"/events?sort=severity&dir=desc", tid("event-table"))
	b.waitTextHas(tid("event-table")+" tbody tr", "critical", 10*time.Second)
	b.shot("events-by-severity")
	b.open(base+"/audit", tid("audit-table"))
	b.shot("audit")

	// The account page: a wrong current password is a form error without
	// a console error; the change itself works.
	b.open(base+"/account", tid("password-form"))
	b.fill("#f-current", "wrong", "#f-password", "a brand new password", "#f-confirm", "a brand new password")
	b.click(tid("password-submit"))
	b.waitTextHas(tid("error-current"), "not your current password", 20*time.Second)
	b.shot("account-wrong-password")
	b.fill("#f-current", ownerPassword, "#f-password", "a brand new password", "#f-confirm", "a brand new password")
	b.click(tid("password-submit"))
	b.waitTextHas(tid("alert-success"), "Password changed", 20*time.Second)
	b.assertClean()

	// A viewer: no Users link, controls they may not use look disabled.
	viewerPw := "viewer password 123"
	c.addUser("viewer@e2e.callplane.test", "viewer", viewerPw)
	b.signOut(base)
	b.signIn(base, "viewer@e2e.callplane.test", viewerPw)
	if n := b.num("users link", `document.querySelectorAll('[data-testid="nav-users"]').length`); n != 0 {
		t.Error("a viewer sees the Users link")
	}
	b.open(base+"/settings", tid("settings-form"))
	if op := b.num("disabled field", `parseFloat(getComputedStyle(document.querySelector('[data-testid="settings-form"] fieldset[disabled] input')).opacity)`); op >= 1 {
		t.Errorf("a field the viewer cannot change looks enabled (opacity %v)", op)
	}
	b.shot("viewer-settings")

	// A phone: the node table shows Health.
	b.viewport(390, 844)
	b.open(base+"/nodes", tid("nodes-table"))
	b.run("health visible", waitVisible(tid("node-row-ivr-1")+" "+tid("health")))
	right := b.num("health right edge", `document.querySelector('[data-testid="node-row-ivr-1"] [data-testid="health"]').getBoundingClientRect().right`)
	if right > 390 {
		t.Errorf("at 390 px the Health badge ends at %.0f px, off-screen", right)
	}
	b.shot("nodes-390px")
	b.viewport(1280, 900)
}

// addUser creates an account with the CLI (password on stdin).
func (c *cluster) addUser(email, role, password string) {
	t := c.t
	t.Helper()
	cm := c.cms[0]
	cmd := exec.Command(filepath.Join(binDir, "callmanager"), "user", "add", "--email", email, "--role", role,
		"--database-url", c.dbURL, "--data-dir", cm.dataDir)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("callmanager user add %s: %v\n%s", email, err, out)
	}
}

// TestDemoInboxShowsAlert runs the demo's mail sink (MailDev, installed
// as make demo installs it) as the cluster's SMTP server, kills a node's
// agent, and checks in Chromium that the inbox page shows the down alert.
func TestDemoInboxShowsAlert(t *testing.T) {
	requireChromium(t)
	requireSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, _ := filepath.Abs("..")
	bin, err := mailsink.Install(ctx, filepath.Join(root, "bin", "maildev"))
	if err != nil {
		t.Fatalf("install the demo's mail sink: %v", err)
	}
	web, smtp := freeTCP(t), freeTCP(t)
	mailDir := t.TempDir()
	args, err := mailsink.Args(web, smtp, mailDir)
	if err != nil {
		t.Fatal(err)
	}
	sink := startProc(t, "maildev", t.TempDir(), bin, args...)
	t.Cleanup(func() { sink.stop(10 * time.Second) })
	if err := mailsink.WaitReady(ctx, web, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sink.tail(20))
	}

	c := newClusterSMTP(t, 1, "smtp://"+smtp+"?tls=none")
	s := &nodeSpec{name: "media-9", kind: "media", capacity: "10", listen: freeSIP(t)}
	c.cli("node", "add", "--name", s.name, "--kind", s.kind, "--address", s.listen, "--capacity", s.capacity)
	a := c.enrol(s.name, c.cli("token", "create", "--node", s.name), s.listen)
	token := c.cli("apitoken", "create", "--name", "e2e-inbox")
	poll(t, 60*time.Second, "media-9 up", func() (bool, string) {
		n := c.node(token, s.name)
		return n.Health == "up", n.Health
	})
	a.kill()
	// The inbox's own API says when the alert has arrived.
	poll(t, 90*time.Second, "the down alert in the inbox", func() (bool, string) {
		resp, err := http.Get("http://" + web + "/api/email")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 64<<10)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return strings.Contains(b.String(), "media-9"), b.String()
	})

	b := newBrowser(t)
	// MailDev 3.0.0's page asks for an icon its server does not have (a
	// 404 of MailDev's own, not of Callplane's pages); any other error
	// still fails the test.
	b.allow(`status of 404 \(Not Found\) http://127\.0\.0\.1:\d+/maildev-icon\.svg$`)
	b.open("http://"+web+"/", "body")
	b.waitText("body", 30*time.Second, "the alert listed in the inbox", func(s string) bool {
		return strings.Contains(s, "media-9") && strings.Contains(strings.ToLower(s), "down")
	})
	b.shot("inbox")
	t.Logf("demo inbox at http://%s shows the alert", web)
}
