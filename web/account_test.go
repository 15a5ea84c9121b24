package web_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

func auditCount(t *testing.T, in *servertest.Instance, action, result string) int {
	t.Helper()
	var n int
	err := in.Pool().QueryRow(context.Background(), "SELECT count(*) FROM audit_log WHERE action = $1 AND result = $2", action, result).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSetupRequiresCodeAndCreatesOwner(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	c := in.Client(t)

	r := in.Get(t, c, "/")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/setup" {
		t.Fatalf("first visit: want redirect to /setup, got %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	// Field errors re-render the form.
	r = in.PostForm(t, c, "/setup", url.Values{"code": {""}, "email": {"not-an-email"}, "password": {"short"}})
	if r.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("invalid setup: status %d", r.StatusCode)
	}
	for _, id := range []string{"error-code", "error-email", "error-password"} {
		if _, ok := servertest.TestID(r.Body, id); !ok {
			t.Errorf("invalid setup: no %s in page", id)
		}
	}
	// A wrong code gets the generic message and creates nothing.
	r = in.PostForm(t, c, "/setup", url.Values{"code": {"WRONGCODE"}, "email": {"owner@example.com"}, "password": {servertest.Password}})
	if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, "Those details are not correct.") {
		t.Fatalf("wrong code: status %d", r.StatusCode)
	}
	if need, _ := in.Auth().NeedsSetup(context.Background()); !need {
		t.Fatal("wrong setup code created an account")
	}
	r = in.PostForm(t, c, "/setup", url.Values{"code": {in.Auth().SetupCode()}, "email": {"owner@example.com"}, "password": {servertest.Password}})
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "Owner account created") {
		t.Fatalf("setup: status %d body %s", r.StatusCode, r.Body)
	}
	// Setup is closed once an account exists.
	r = in.Get(t, c, "/setup")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" {
		t.Fatalf("setup after owner: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if auditCount(t, in, "setup", "ok") != 1 || auditCount(t, in, "setup", "error") != 1 {
		t.Fatal("setup audit rows missing")
	}
}

func sessionCookie(c *http.Client, base string) string {
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "__Host-callplane_session" {
			return ck.Value
		}
	}
	return ""
}

func TestLoginSessionLogout(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	if _, err := in.Auth().AddUser(context.Background(), "test", "local", "admin@example.com", servertest.Password, "admin"); err != nil {
		t.Fatal(err)
	}
	c := in.Client(t)
	// Wrong password and unknown user: the same answer.
	wrong := in.PostForm(t, c, "/login", url.Values{"email": {"admin@example.com"}, "password": {"wrong password!!"}})
	unknown := in.PostForm(t, c, "/login", url.Values{"email": {"nobody@example.com"}, "password": {"wrong password!!"}})
	if wrong.StatusCode != http.StatusUnauthorized || unknown.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad sign-in statuses %d %d", wrong.StatusCode, unknown.StatusCode)
	}
	msg := regexp.MustCompile(`data-testid="alert-error">([^<]*)`)
	if msg.FindString(wrong.Body) == "" || msg.FindString(wrong.Body) != msg.FindString(unknown.Body) {
		t.Fatalf("wrong password and unknown user differ")
	}
	// Empty fields re-render with field messages.
	empty := in.PostForm(t, c, "/login", url.Values{})
	if _, ok := servertest.TestID(empty.Body, "error-email"); !ok || empty.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("empty sign-in: %d", empty.StatusCode)
	}

	// Sign in; the cookie is Secure, HttpOnly, SameSite=Lax.
	r := in.PostForm(t, c, "/login", url.Values{"email": {"admin@example.com"}, "password": {servertest.Password}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", r.StatusCode)
	}
	set := r.Header.Get("Set-Cookie")
	for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Lax", "__Host-callplane_session="} {
		if !strings.Contains(set, attr) {
			t.Errorf("session cookie lacks %s: %s", attr, set)
		}
	}
	first := sessionCookie(c, in.URL)
	if who, _ := servertest.TestID(in.Get(t, c, "/audit").Body, "whoami"); who != "admin@example.com" {
		t.Fatalf("signed in as %q", who)
	}
	// Signing in again gives a new session id and ends the old one.
	in.PostForm(t, c, "/login", url.Values{"email": {"admin@example.com"}, "password": {servertest.Password}})
	second := sessionCookie(c, in.URL)
	if second == "" || second == first {
		t.Fatal("session id not renewed at sign-in")
	}
	if _, err := in.Auth().Session(context.Background(), first); err == nil {
		t.Fatal("old session still valid after a new sign-in")
	}
	// Sign out ends the session server-side.
	in.PostForm(t, c, "/logout", nil)
	if _, err := in.Auth().Session(context.Background(), second); err == nil {
		t.Fatal("session valid after sign-out")
	}
	if r := in.Get(t, c, "/audit"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d", r.StatusCode)
	}
	if auditCount(t, in, "login", "ok") != 2 || auditCount(t, in, "login", "error") != 2 || auditCount(t, in, "logout", "ok") != 2 {
		t.Fatal("login/logout audit rows missing")
	}
}

func TestLoginThrottled(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	if _, err := in.Auth().AddUser(context.Background(), "test", "local", "v@example.com", servertest.Password, "viewer"); err != nil {
		t.Fatal(err)
	}
	c := in.Client(t)
	for i := 0; i < 5; i++ {
		in.PostForm(t, c, "/login", url.Values{"email": {"v@example.com"}, "password": {"wrong password!!"}})
	}
	// Even the right password is refused while throttled.
	r := in.PostForm(t, c, "/login", url.Values{"email": {"v@example.com"}, "password": {servertest.Password}})
	if r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("throttled sign-in: status %d", r.StatusCode)
	}
	if auditCount(t, in, "login", "throttled") != 1 {
		t.Fatal("throttled sign-in not audited")
	}
}

func TestRolesAndDisablingEndsSessions(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	owner := in.User(t, "owner@example.com", "owner")
	viewer := in.User(t, "viewer@example.com", "viewer")

	// Viewers cannot reach owner pages or change anything.
	if r := in.Get(t, viewer, "/users"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer /users: %d", r.StatusCode)
	}
	if r := in.PostForm(t, viewer, "/users", url.Values{"email": {"x@example.com"}, "password": {servertest.Password}, "role": {"admin"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer add user: %d", r.StatusCode)
	}
	if r := in.PostForm(t, viewer, "/nodes", url.Values{"name": {"m1"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer add node: %d", r.StatusCode)
	}
	// An owner adds a user; a bad form re-renders with field messages.
	r := in.PostForm(t, owner, "/users", url.Values{"email": {"bad"}, "password": {"x"}, "role": {"root"}})
	if r.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("bad user form: %d", r.StatusCode)
	}
	for _, id := range []string{"error-email", "error-password", "error-role"} {
		if _, ok := servertest.TestID(r.Body, id); !ok {
			t.Errorf("bad user form: no %s", id)
		}
	}
	r = in.PostForm(t, owner, "/users", url.Values{"email": {"new@example.com"}, "password": {servertest.Password}, "role": {"admin"}})
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Body, `data-testid="user-new@example.com"`) {
		t.Fatalf("add user: %d", r.StatusCode)
	}
	// Disabling the viewer ends their session at once.
	users, _ := in.Auth().ListUsers(context.Background())
	var vid int64
	for _, u := range users {
		if u.Email == "viewer@example.com" {
			vid = u.ID
		}
	}
	r = in.PostForm(t, owner, "/users/"+strings.TrimSpace(itoa(vid))+"/disable", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("disable user: %d %s", r.StatusCode, r.Body)
	}
	if r := in.Get(t, viewer, "/audit"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("disabled viewer still signed in: %d", r.StatusCode)
	}
	if auditCount(t, in, "user.add", "ok") != 3 || auditCount(t, in, "user.disable", "ok") != 1 {
		t.Fatal("user audit rows missing")
	}
	// The audit page lists the change.
	if r := in.Get(t, owner, "/audit?q=user.disable"); !strings.Contains(r.Body, "viewer@example.com") {
		t.Fatal("audit page does not show the disable")
	}
}

func TestSecurityHeadersCSRFAndNotFound(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	c := in.Client(t)
	r := in.Get(t, c, "/login")
	csp := r.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP: %q", csp)
	}
	for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Strict-Transport-Security": "max-age="} {
		if !strings.Contains(r.Header.Get(h), want) {
			t.Errorf("%s = %q", h, r.Header.Get(h))
		}
	}
	if strings.Contains(r.Body, "<script>") || regexp.MustCompile(`<script[^>]*>[^<]+</script>`).MatchString(r.Body) {
		t.Error("page has inline script")
	}
	// A cross-site POST is refused before any handler runs.
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/login", strings.NewReader("email=a&password=b"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r := in.Do(t, c, req); r.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d", r.StatusCode)
	}
	if n := auditCount(t, in, "login", "error"); n != 0 {
		t.Fatalf("cross-site POST reached the handler (%d audit rows)", n)
	}
	owner := in.User(t, "o@example.com", "owner")
	r = in.Get(t, owner, "/no/such/page")
	if r.StatusCode != http.StatusNotFound || !strings.Contains(r.Body, "404") {
		t.Fatalf("missing page: %d", r.StatusCode)
	}
	// htmx is served with the pinned version.
	if r := in.Get(t, c, "/assets/htmx-2.0.8.min.js"); r.StatusCode != http.StatusOK || !strings.Contains(r.Body, "htmx") {
		t.Fatalf("htmx asset: %d", r.StatusCode)
	}
}
