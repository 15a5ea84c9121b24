package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/server/servertest"
)

// hostileBodies are the inputs every route gets: the attacks of issue 16.
var hostileBodies = []struct {
	name string
	json string // sent as a JSON body to /api routes
	form string // sent as a form body to portal routes
	qry  string // appended to the query of every route
}{
	{"nul", `{"name":"a\u0000b","ref":"r\u0000","version":"\u0000","email":"a\u0000@x","state":"\u0000"}`, "name=a%00b&email=a%00%40x&password=p%00&ref=r%00&description=%00&code=%00&next=%2F%00", "q=%00&node=%00"},
	{"invalid-utf8", "{\"name\":\"\xff\xfe\",\"ref\":\"\xc3\",\"version\":\"\xe2\x82\"}", "name=%FF%FE&email=%C3&password=%E2%82&ref=%FF&region=%C3%28", "q=%FF&kind=%C3"},
	{"10MB", `{"name":"` + strings.Repeat("a", 10<<20) + `"}`, "description=" + strings.Repeat("a", 10<<20), ""},
	{"trailing-garbage", `{"kind":"call","ref":"g1","cost":1}garbage{`, "name=x&email=a%40b.c&password=y&x", "since=1garbage&wait=0sx"},
	{"unknown-fields", `{"kind":"call","ref":"u1","cost":1,"admin":true,"__proto__":{}}`, "unknown=1&admin=true", "unknown=%00"},
	{"control-chars", `{"name":"a\u001bb","description":"\u0007","note":"\u0085"}`, "name=a%1Bb&description=%07&email=%C2%85", "q=%1B"},
}

// TestHostileInputEveryRoute walks the real router, so a route added
// later is covered without editing this test, and sends every hostile
// body to every route — as a signed-in owner with an admin token, as an
// enrolled agent, and unauthenticated (/login and /setup included). No
// answer may be a 5xx, and afterwards the instance and its database still
// work: an agent still heartbeats and the database answers.
func TestHostileInputEveryRoute(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.AddNode(t, "media-1", "media", "127.0.0.1:5061", 10)
	in.AddNode(t, "media-2", "media", "127.0.0.1:5062", 10)
	cred := enrol(t, in, "media-1")
	token := in.APIToken(t)
	owner := in.User(t, "owner@example.com", "owner")

	type route struct{ method, path string }
	var routes []route
	mux, ok := in.Handler().(chi.Routes)
	if !ok {
		t.Fatalf("handler is %T, not a chi router", in.Handler())
	}
	err := chi.Walk(mux, func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, route{method, fill(pattern)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Signing out ends the owner's session: last.
	sort.SliceStable(routes, func(i, j int) bool {
		return !strings.HasSuffix(routes[i].path, "/logout") && strings.HasSuffix(routes[j].path, "/logout")
	})
	if len(routes) < 40 {
		t.Fatalf("walked only %d routes", len(routes))
	}
	anon := in.Client(t)
	sent := 0
	for _, rt := range routes {
		for _, hb := range hostileBodies {
			for _, who := range []string{"authorised", "anonymous"} {
				c := owner
				if who == "anonymous" {
					c = anon
				}
				req := hostileRequest(t, in, rt.method, rt.path, hb.json, hb.form, hb.qry)
				if who == "authorised" && strings.HasPrefix(rt.path, "/api/") {
					bearer := token
					if isAgentRoute(rt.path) {
						bearer = cred
					}
					req.Header.Set("Authorization", "Bearer "+bearer)
				}
				resp, err := c.Do(req)
				sent++
				if err != nil {
					// A 10 MB body may be cut off once the server has
					// answered 413 and closed: not a 5xx.
					if hb.name == "10MB" {
						continue
					}
					t.Errorf("%s %s (%s, %s): %v", rt.method, rt.path, hb.name, who, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					t.Errorf("%s %s (%s, %s): status %d", rt.method, rt.path, hb.name, who, resp.StatusCode)
				}
			}
		}
	}
	t.Logf("%d routes, %d hostile requests, no 5xx", len(routes), sent)

	// Still healthy: ready, an agent's heartbeat is written, the database answers.
	if r := in.Get(t, in.Client(t), "/readyz"); r.StatusCode != http.StatusOK {
		t.Fatalf("readyz after the barrage: %d", r.StatusCode)
	}
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", cred, map[string]any{"load": 0, "version": "after"}); r.StatusCode != http.StatusOK {
		t.Fatalf("heartbeat after the barrage: %d %s", r.StatusCode, r.Body)
	}
	var bad int
	if err := in.Pool().QueryRow(context.Background(), `SELECT count(*) FROM nodes WHERE position(chr(65533) in name || description || region || agent_version) > 0`).Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("database after the barrage: %d mangled rows, %v", bad, err)
	}
}

func isAgentRoute(path string) bool {
	return path == "/api/v1/heartbeat" || strings.HasPrefix(path, "/api/v1/assignments")
}

// fill turns a route pattern into a path: each {param} gets a plausible
// value, a catch-all a file name.
func fill(pattern string) string {
	parts := strings.Split(pattern, "/")
	for i, p := range parts {
		switch {
		case p == "*":
			parts[i] = "app.css"
		case strings.HasPrefix(p, "{") && strings.Contains(p, ":"):
			// {action:enable|drain|disable}: the first choice.
			alt := strings.TrimSuffix(p[strings.Index(p, ":")+1:], "}")
			parts[i], _, _ = strings.Cut(alt, "|")
		case p == "{name}":
			parts[i] = "media-2"
		case strings.HasPrefix(p, "{"):
			parts[i] = "1"
		}
	}
	return strings.Join(parts, "/")
}

func hostileRequest(t *testing.T, in *servertest.Instance, method, path, jsonBody, formBody, query string) *http.Request {
	t.Helper()
	target := in.URL + path
	q := "since=0&wait=0s"
	if query != "" {
		q += "&" + query
	}
	target += "?" + q
	var body *bytes.Reader
	ct := ""
	switch {
	case method == http.MethodGet || method == http.MethodHead:
		body = bytes.NewReader(nil)
	case strings.HasPrefix(path, "/api/"):
		body, ct = bytes.NewReader([]byte(jsonBody)), "application/json"
	default:
		body, ct = bytes.NewReader([]byte(formBody)), "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		// A query Go's client refuses to send is not an attack we can make.
		req, _ = http.NewRequest(method, in.URL+path+"?"+url.Values{"q": {query}}.Encode(), body)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Origin", in.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return req
}
