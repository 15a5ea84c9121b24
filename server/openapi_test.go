package server_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

// routerRoutes walks the real router and returns "METHOD /api/v1/…" of
// every API route, a pattern such as {action:enable|drain} expanded into
// its alternatives.
func routerRoutes(t *testing.T, h http.Handler) []string {
	t.Helper()
	routes, ok := h.(chi.Routes)
	if !ok {
		t.Fatalf("handler %T is not a chi router", h)
	}
	alt := regexp.MustCompile(`\{[a-z]+:([a-z|-]+)\}`)
	var out []string
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !strings.HasPrefix(route, "/api/v1/") {
			return nil
		}
		route = strings.ReplaceAll(route, "/*/", "/")
		if m := alt.FindStringSubmatch(route); m != nil {
			for _, a := range strings.Split(m[1], "|") {
				out = append(out, method+" "+strings.Replace(route, m[0], a, 1))
			}
			return nil
		}
		out = append(out, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestOpenAPIMatchesRouter checks both ways: every API route of the
// router is in the OpenAPI document, and every documented route answers
// (neither the router's 404 nor 405).
func TestOpenAPIMatchesRouter(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)
	owner := in.User(t, "owner@example.com", accounts.RoleOwner)

	r, doc := api(t, in, http.MethodGet, "/api/v1/openapi.json", "", nil)
	if r.StatusCode != http.StatusOK || doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi.json: %d %.300s", r.StatusCode, r.Body)
	}
	paths, _ := doc["paths"].(map[string]any)
	var documented []string
	for p, item := range paths {
		for m, op := range item.(map[string]any) {
			o := op.(map[string]any)
			if o["responses"] == nil || o["operationId"] == nil {
				t.Errorf("%s %s: no responses or operationId", m, p)
			}
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	slices.Sort(documented)
	if want := server.DocumentedRoutes(); !slices.Equal(documented, want) {
		t.Fatalf("document paths differ from the operation table:\n%v\n%v", documented, want)
	}

	served := routerRoutes(t, in.Handler())
	for _, rt := range served {
		if !slices.Contains(documented, rt) {
			t.Errorf("route %s is not in the OpenAPI document", rt)
		}
	}
	params := strings.NewReplacer("{name}", "m1", "{ref}", "no-such-ref", "{id}", "999999")
	for _, rt := range documented {
		method, path, _ := strings.Cut(rt, " ")
		req, _ := http.NewRequest(method, in.URL+params.Replace(path), strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", in.URL)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp := in.Do(t, owner, req)
		var body map[string]any
		_ = json.Unmarshal([]byte(resp.Body), &body)
		msg, _ := body["error"].(string)
		if resp.StatusCode == http.StatusMethodNotAllowed || strings.HasPrefix(msg, "no such API route") {
			t.Errorf("documented %s answers %d %s", rt, resp.StatusCode, msg)
		}
		if !slices.Contains(served, rt) {
			t.Errorf("documented %s is not a route of the router", rt)
		}
	}
}

// TestAPIJSONErrors: unknown API paths and wrong methods answer JSON.
func TestAPIJSONErrors(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/api/v1/no-such-thing", http.StatusNotFound},
		{http.MethodGet, "/api/v1/nodes/m1/no-such-action", http.StatusNotFound},
		{http.MethodPut, "/api/v1/nodes", http.StatusMethodNotAllowed},
		{http.MethodPut, "/api/v1/work/x", http.StatusMethodNotAllowed},
	} {
		r, m := api(t, in, c.method, c.path, "", nil)
		if r.StatusCode != c.status || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") || m["error"] == nil {
			t.Errorf("%s %s: %d %q %s", c.method, c.path, r.StatusCode, r.Header.Get("Content-Type"), r.Body)
		}
	}
}
