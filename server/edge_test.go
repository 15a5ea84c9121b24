package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

// clientFrom is a test client whose connections leave from a given
// loopback address (127.0.0.2 …), as a different client host would.
func clientFrom(ip string) *http.Client {
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{
		Jar: jar, Timeout: 60 * time.Second,
		Transport:     &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func login(t *testing.T, in *servertest.Instance, c *http.Client, email, password, xff string) *servertest.Response {
	t.Helper()
	form := url.Values{"email": {email}, "password": {password}}
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", in.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	return in.Do(t, c, req)
}

func sourceOf(t *testing.T, in *servertest.Instance, email string) string {
	t.Helper()
	var addr string
	if err := in.Pool().QueryRow(context.Background(), `SELECT source_addr FROM audit_log WHERE action = 'login' AND actor = $1 ORDER BY id DESC LIMIT 1`, email).Scan(&addr); err != nil {
		t.Fatal(err)
	}
	return addr
}

// X-Forwarded-For names the client only when the peer is a listed proxy:
// anyone else's header is ignored, so a client cannot pick the address it
// is throttled and audited under.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes, Configure: func(c *server.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	}})
	login(t, in, clientFrom("127.0.0.1"), "spoof@example.com", "wrong password", "203.0.113.9")
	if got := sourceOf(t, in, "spoof@example.com"); got != "127.0.0.1" {
		t.Errorf("untrusted peer's X-Forwarded-For believed: source %s", got)
	}
	login(t, in, clientFrom("127.0.0.2"), "proxied@example.com", "wrong password", "203.0.113.9, 198.51.100.7")
	if got := sourceOf(t, in, "proxied@example.com"); got != "198.51.100.7" {
		t.Errorf("trusted proxy's client: source %s, want 198.51.100.7 (right-most untrusted hop)", got)
	}
}

// NIST SP 800-63B: a slowdown, not a lockout. Others guessing an account's
// password from many addresses slow down sign-ins from new addresses, but
// the owner's correct password still works from an address it has signed
// in from.
func TestOwnerSignsInWhileOthersGuess(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	if _, err := in.Auth().AddUser(context.Background(), "test", "local", "owner@example.com", servertest.Password, "owner"); err != nil {
		t.Fatal(err)
	}
	if r := login(t, in, clientFrom("127.0.0.1"), "owner@example.com", servertest.Password, ""); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("first sign-in: %d", r.StatusCode)
	}
	// Ten wrong guesses (the account's free allowance) from three other
	// addresses, each under the per-address slowdown.
	for i, ip := range []string{"127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		c := clientFrom(ip)
		for range []int{4, 4, 2}[i] {
			if r := login(t, in, c, "owner@example.com", "not the password", ""); r.StatusCode != http.StatusUnauthorized {
				t.Fatalf("guess from %s: %d", ip, r.StatusCode)
			}
		}
	}
	// From a new address the account is slowed down (429 with Retry-After)…
	r := login(t, in, clientFrom("127.0.0.6"), "owner@example.com", servertest.Password, "")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("new address during guessing: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// …but the owner's usual address still signs in.
	if r := login(t, in, clientFrom("127.0.0.1"), "owner@example.com", servertest.Password, ""); r.StatusCode != http.StatusSeeOther {
		t.Errorf("owner locked out: %d", r.StatusCode)
	}
}

// A body trickled a byte at a time is cut off at the body timeout (408 or
// a closed connection), not held open.
func TestTrickledBodyTimesOut(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes, Configure: func(c *server.Config) { c.BodyTimeout = time.Second }})
	conn, err := tls.Dial("tcp", in.Addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn)
		done <- string(b)
	}()
	// Keep trickling while waiting, as the attacker does.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case resp := <-done:
			if resp != "" && !strings.HasPrefix(resp, "HTTP/1.1 408") {
				t.Errorf("answer: %.80q", resp)
			}
			t.Logf("cut off after %s", time.Since(start).Round(time.Millisecond))
			return
		case <-tick.C:
			if time.Since(start) > 60*time.Second {
				t.Fatal("trickled body still open after 60 s")
			}
			_, _ = conn.Write([]byte(" "))
		}
	}
}

// One client address may hold only so many connections; the next is
// closed at once, and a freed slot is usable again.
func TestConnectionCapPerClient(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes, Configure: func(c *server.Config) { c.MaxConnsPerClient = 3 }})
	dial := func() (*tls.Conn, error) {
		d := &net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.7")}}
		return tls.DialWithDialer(d, "tcp", in.Addr(), &tls.Config{InsecureSkipVerify: true})
	}
	var held []*tls.Conn
	for range 3 {
		c, err := dial()
		if err != nil {
			t.Fatalf("connection within the cap: %v", err)
		}
		held = append(held, c)
	}
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("a fourth connection from the same address was served")
	}
	// Another address is not affected.
	if r, err := clientFrom("127.0.0.8").Get(in.URL + "/healthz"); err != nil || r.StatusCode != 200 {
		t.Fatalf("another client: %v", err)
	}
	held[0].Close()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var c *tls.Conn
		if c, err = dial(); err == nil {
			c.Close()
			break
		}
	}
	if err != nil {
		t.Fatalf("freed slot not reusable: %v", err)
	}
	for _, c := range held[1:] {
		c.Close()
	}
}

// Bodies over the route's limit answer 413 naming the body; strict JSON
// refuses unknown fields and trailing data with 400 naming the field; a
// negative weight is refused, not replaced; a ref with '/' is refused.
func TestBodyLimitsAndStrictJSON(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	tok := in.APIToken(t)
	for _, tc := range []struct {
		path, body string
		status     int
		field      string
	}{
		{"/api/v1/enroll", `{"token":"` + strings.Repeat("a", 200<<10) + `"}`, 413, "body"},
		{"/api/v1/work", `{"kind":"call","ref":"a","cost":1,"priority":9}`, 400, "priority"},
		{"/api/v1/work", `{"kind":"call","ref":"a","cost":1} {"x":1}`, 400, "body"},
		{"/api/v1/work", `{"kind":"call","ref":"a/b","cost":1}`, 400, "ref"},
		{"/api/v1/work", "{\"kind\":\"call\",\"ref\":\"a\xffb\",\"cost\":1}", 400, "ref"},
		{"/api/v1/work", `[{"kind":"call","ref":"a","cost":1},{"kind":"call","ref":"b\u0000","cost":1}]`, 400, "[1].ref"},
		{"/api/v1/nodes", `{"name":"n1","kind":"media","address":"127.0.0.1:5070","capacity":5,"weight":-5}`, 400, "weight"},
	} {
		r, m := api(t, in, "POST", tc.path, tok, tc.body)
		if r.StatusCode != tc.status || !strings.Contains(fmt.Sprint(m["error"]), tc.field) {
			t.Errorf("%s %.60s: %d %s; want %d naming %s", tc.path, tc.body, r.StatusCode, r.Body, tc.status, tc.field)
		}
	}
	if n := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'n1'"); n != 0 {
		t.Error("node with a negative weight was written")
	}
	// A JSON body declared as a form (curl's -d alone): 415 naming the
	// header, not a puzzling "not a JSON value"; nothing written. No
	// Content-Type at all is taken as JSON (202: no node to place it on).
	for ct, want := range map[string]int{"application/x-www-form-urlencoded": 415, "text/plain": 415, "": 202} {
		req, _ := http.NewRequest("POST", in.URL+"/api/v1/work", strings.NewReader(`{"kind":"call","ref":"ct-`+strconv.Itoa(want)+`","cost":1}`))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		r := in.Do(t, in.Client(t), req)
		if r.StatusCode != want || (want == 415 && !strings.Contains(string(r.Body), "Content-Type")) {
			t.Errorf("Content-Type %q: %d %s; want %d", ct, r.StatusCode, r.Body, want)
		}
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE ref = 'ct-415'"); n != 0 {
		t.Error("a body declared as a form was written")
	}
}

// While the database is unreachable the API, the portal and sign-in answer
// 503 with Retry-After — never 401 "invalid credentials" for a valid
// token, never a sign-in form for a signed-in user.
func TestDatabaseOutageIs503(t *testing.T) {
	t.Parallel()
	fw := forwardPostgres(t, dbtest.URL(t))
	in := servertest.Start(t, servertest.Options{DatabaseURL: fw.url, Settings: servertest.NoProbes})
	tok := in.APIToken(t)
	owner := in.User(t, "owner@example.com", "owner")
	fw.stop()
	check := func(what string, r *servertest.Response) {
		t.Helper()
		if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s during the outage: %d (Retry-After %q) %.100s", what, r.StatusCode, r.Header.Get("Retry-After"), r.Body)
		}
	}
	r, _ := api(t, in, "GET", "/api/v1/nodes", tok, nil)
	check("admin API", r)
	check("portal page", in.Get(t, owner, "/nodes"))
	check("sign-in", login(t, in, in.Client(t), "owner@example.com", servertest.Password, ""))
}

type pgForwarder struct {
	url  string
	stop func()
}

// forwardPostgres serves the test database on a loopback TCP port through
// a forwarder the test can cut, as a network partition would.
func forwardPostgres(t *testing.T, dbURL string) pgForwarder {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	socks, _ := filepath.Glob(filepath.Join(u.Query().Get("host"), ".s.PGSQL.*[0-9]"))
	if len(socks) == 0 {
		t.Fatalf("no Postgres socket under %s", u.Query().Get("host"))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", socks[0])
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(stop)
	q := u.Query()
	q.Del("host")
	q.Set("connect_timeout", "2")
	out := url.URL{Scheme: "postgres", User: u.User, Host: ln.Addr().String(), Path: u.Path, RawQuery: q.Encode()}
	return pgForwarder{url: out.String(), stop: stop}
}
