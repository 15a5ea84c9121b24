// Package servertest starts real call manager instances for tests: the
// real server, router and background tasks on a loopback port, against a
// fresh database from db/dbtest, with HTTP clients that trust its pin.
package servertest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server"
)

// Instance is a running call manager.
type Instance struct {
	*server.Server
	URL    string
	DBURL  string
	cancel context.CancelFunc
	done   chan error
}

// Options tune Start.
type Options struct {
	// DatabaseURL shares a database between instances; empty creates one.
	DatabaseURL string
	InstanceID  string
	// Configure may change the config before the server starts.
	Configure func(*server.Config)
	// BeforeRun may register background tasks.
	BeforeRun func(*server.Server)
	// Settings are stored (as if saved in the portal) before the instance
	// starts, e.g. {"probe_interval": "1h"} to keep the health checker
	// away from nodes whose addresses serve nothing.
	Settings map[string]string
}

// NoProbes is a Settings value that keeps the health checker idle.
var NoProbes = map[string]string{"probe_interval": "1h"}

// Start runs an instance until the test ends.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	if opts.DatabaseURL == "" {
		opts.DatabaseURL = dbtest.URL(t)
	}
	if len(opts.Settings) > 0 {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, opts.DatabaseURL)
		if err != nil {
			t.Fatalf("store settings: %v", err)
		}
		for k, v := range opts.Settings {
			if _, err := conn.Exec(ctx, `INSERT INTO settings (key, value, updated_by) VALUES ($1, $2, 'test')
				ON CONFLICT (key) DO UPDATE SET value = excluded.value`, k, v); err != nil {
				t.Fatalf("store setting %s: %v", k, err)
			}
		}
		conn.Close(ctx)
	}
	cfg := server.Config{
		DatabaseURL: opts.DatabaseURL, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		InstanceID: opts.InstanceID, LeaseTTL: 2 * time.Second, HeartbeatFlush: 20 * time.Millisecond,
		Version: "test",
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("CALLPLANE_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("start call manager: %v", err)
	}
	if opts.BeforeRun != nil {
		opts.BeforeRun(s)
	}
	in := &Instance{Server: s, URL: s.URL(), DBURL: opts.DatabaseURL, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- s.Run(ctx) }()
	t.Cleanup(in.Stop)
	// Wait until it serves.
	c := in.Client(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(in.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call manager did not serve: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return in
}

// Stop stops the instance and waits for it (idempotent).
func (in *Instance) Stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	select {
	case <-in.done:
	case <-time.After(15 * time.Second):
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Client returns an HTTP client that trusts the instance's certificate,
// keeps cookies and does not follow redirects.
func (in *Instance) Client(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:     jar,
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the test talks to its own instance
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Password is the password of users made by User.
const Password = "correct horse battery staple"

// User creates an account with a role and returns a signed-in client.
func (in *Instance) User(t testing.TB, email, role string) *http.Client {
	t.Helper()
	if _, err := in.Auth().AddUser(context.Background(), "test", "local", email, Password, role); err != nil {
		t.Fatalf("add user %s: %v", email, err)
	}
	c := in.Client(t)
	resp := in.PostForm(t, c, "/login", url.Values{"email": {email}, "password": {Password}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in %s: status %d", email, resp.StatusCode)
	}
	return c
}

// PostForm posts a same-origin form.
func (in *Instance) PostForm(t testing.TB, c *http.Client, path string, form url.Values) *Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", in.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return in.Do(t, c, req)
}

// Get fetches a path.
func (in *Instance) Get(t testing.TB, c *http.Client, path string) *Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, in.URL+path, nil)
	return in.Do(t, c, req)
}

// HTMX fetches a path as htmx does.
func (in *Instance) HTMX(t testing.TB, c *http.Client, method, path string, form url.Values) *Response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, in.URL+path, body)
	req.Header.Set("HX-Request", "true")
	req.Header.Set("Origin", in.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r := in.Do(t, c, req)
	// The portal answers a deliberate 4xx to htmx as 200 with the status
	// in a header (so the browser logs no failed resource); StatusCode is
	// the outcome, Wire what was sent.
	if s := r.Header.Get("X-Callplane-Status"); s != "" {
		if r.Wire != http.StatusOK {
			t.Fatalf("%s %s: X-Callplane-Status %s on a %d answer", method, path, s, r.Wire)
		}
		fmt.Sscan(s, &r.StatusCode)
	}
	return r
}

// Response is an HTTP response with its body read. StatusCode is the
// outcome (see HTMX); Wire is the status sent.
type Response struct {
	*http.Response
	Body string
	Wire int
}

// Do sends a request and reads the body.
func (in *Instance) Do(t testing.TB, c *http.Client, req *http.Request) *Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return &Response{Response: resp, Body: string(b), Wire: resp.StatusCode}
}

// APIToken creates an admin API token.
func (in *Instance) APIToken(t testing.TB) string {
	t.Helper()
	tok, err := in.Nodes().CreateAPIToken(context.Background(), nodes.Actor{Name: "test"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// AddNode registers a node directly through the domain service.
func (in *Instance) AddNode(t testing.TB, name, kind, address string, capacity int) {
	t.Helper()
	_, err := in.Nodes().AddNode(context.Background(), nodes.Actor{Name: "test"}, nodes.NodeInput{
		Name: name, Kind: kind, Address: address, Capacity: strconv.Itoa(capacity),
	})
	if err != nil {
		t.Fatalf("add node %s: %v", name, err)
	}
}

// TestID finds the text of the element with a data-testid in HTML, for
// simple assertions.
func TestID(html, id string) (string, bool) {
	re := regexp.MustCompile(`data-testid="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)`)
	m := re.FindStringSubmatch(html)
	if m == nil {
		return "", false
	}
	return strings.TrimSpace(m[1]), true
}
