package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser is one headless Debian Chromium driven with chromedp. It records
// every console error, uncaught exception and browser log error (CSP
// violations land there) and fails the test on them.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
	allowed  []*regexp.Regexp
}

// stepTimeout bounds every single browser action.
const stepTimeout = 30 * time.Second

func newBrowser(t *testing.T) *browser {
	t.Helper()
	requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.IgnoreCertErrors,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t}
	// The listener sees the tab from its first event. chromedp enables
	// the Runtime and Log domains itself.
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithListener(b.onEvent))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first Do binds the browser's life to its context, so it gets the
	// test's context and is bounded from outside instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start Chromium (%s): %v", chromiumPath, err)
		}
	case <-time.After(60 * time.Second):
		cancelCtx()
		t.Fatalf("start Chromium (%s): no answer within 60s", chromiumPath)
	}
	// Registered after the cancel above, so it runs first: the browser is
	// still alive to take the screenshot.
	t.Cleanup(func() {
		b.assertClean()
		if t.Failed() {
			b.saveArtifacts()
		}
	})
	return b
}

func (b *browser) onEvent(ev any) {
	var msg string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		msg = "uncaught exception: " + d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		msg += fmt.Sprintf(" at %s:%d", d.URL, d.LineNumber)
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		parts := []string{}
		for _, a := range e.Args {
			if a.Value != nil {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		msg = "console." + string(e.Type) + ": " + strings.Join(parts, " ")
	case *cdplog.EventEntryAdded:
		if e.Entry.Level != cdplog.EntryLevelError {
			return
		}
		msg = fmt.Sprintf("browser log (%s): %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL)
	default:
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, re := range b.allowed {
		if re.MatchString(msg) {
			return
		}
	}
	b.problems = append(b.problems, msg)
}

// allow accepts browser errors matching re from now on (for pages a test
// expects to answer with an error status).
func (b *browser) allow(re string) {
	b.mu.Lock()
	b.allowed = append(b.allowed, regexp.MustCompile(re))
	b.mu.Unlock()
}

// assertClean fails the test if the browser reported any error so far.
func (b *browser) assertClean() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Errorf("the browser reported %d error(s) (console, exceptions, CSP):\n  %s", len(b.problems), strings.Join(b.problems, "\n  "))
		b.problems = nil
	}
}

// run performs browser actions under stepTimeout and fails the test with
// what was being done.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v (page %s)", what, err, b.location())
	}
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

// tid is the CSS selector of a data-testid.
func tid(id string) string { return `[data-testid="` + id + `"]` }

// open navigates to url and waits until sel is visible.
func (b *browser) open(url, sel string) {
	b.t.Helper()
	b.run("open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// fill sets form fields by CSS selector.
func (b *browser) fill(fields ...string) {
	b.t.Helper()
	var acts []chromedp.Action[chromedp.Void]
	for i := 0; i+1 < len(fields); i += 2 {
		acts = append(acts, chromedp.WaitReady(chromedp.CSS(fields[i])), chromedp.SetValue(chromedp.CSS(fields[i]), fields[i+1]))
	}
	b.run("fill "+strings.Join(fields, " "), acts...)
}

func (b *browser) click(sel string) {
	b.t.Helper()
	b.run("click "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// text returns the trimmed text of the first element matching sel, or ""
// when there is none.
func (b *browser) text(sel string) string {
	b.t.Helper()
	js := fmt.Sprintf(`(function(){var e=document.querySelector(%s);return e?e.textContent.replace(/\s+/g," ").trim():""})()`, jsString(sel))
	return b.eval("read "+sel, js)
}

// waitText polls until the text of sel satisfies ok, for at most timeout.
// The pages refresh their live regions themselves (htmx polling), so no
// reload is needed.
func (b *browser) waitText(sel string, timeout time.Duration, what string, ok func(string) bool) string {
	b.t.Helper()
	var got string
	poll(b.t, timeout, what+" ("+sel+")", func() (bool, string) {
		got = b.text(sel)
		return ok(got), fmt.Sprintf("%q on %s", got, b.location())
	})
	return got
}

func (b *browser) waitTextIs(sel, want string, timeout time.Duration) {
	b.t.Helper()
	b.waitText(sel, timeout, "text "+want, func(s string) bool { return s == want })
}

func (b *browser) waitTextHas(sel, want string, timeout time.Duration) string {
	b.t.Helper()
	return b.waitText(sel, timeout, "text containing "+want, func(s string) bool { return strings.Contains(s, want) })
}

// path returns the current URL path.
func (b *browser) path() string {
	b.t.Helper()
	return b.eval("read location", `location.pathname`)
}

// eval evaluates a JavaScript expression that gives a string. DevTools
// evaluation is not subject to the page's CSP.
func (b *browser) eval(what, js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return s
}

func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// saveArtifacts keeps a full-page screenshot and the HTML of the current
// page in e2e/artifacts/ for a failed test.
func (b *browser) saveArtifacts() {
	dir := "artifacts"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("artifacts: %v", err)
		return
	}
	base := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name())+"-"+time.Now().Format("150405"))
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("artifacts: screenshot: %v", err)
	}
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		b.t.Logf("artifacts: page HTML: %v", err)
	}
	if len(png) > 0 {
		_ = os.WriteFile(base+".png", png, 0o644)
	}
	_ = os.WriteFile(base+".html", []byte("<!-- "+loc+" -->\n"+html), 0o644)
	abs, _ := filepath.Abs(base)
	b.t.Logf("artifacts of the failure (page %s): %s.png, %s.html", loc, abs, abs)
}

// waitVisible waits for the element matching the CSS selector.
func waitVisible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}
