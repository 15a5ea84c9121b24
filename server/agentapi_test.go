package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server/servertest"
)

// api sends a JSON request with an optional bearer token.
func api(t *testing.T, in *servertest.Instance, method, path, bearer string, body any) (*servertest.Response, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest(method, in.URL+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	r := in.Do(t, in.Client(t), req)
	var m map[string]any
	_ = json.Unmarshal([]byte(r.Body), &m)
	return r, m
}

func count(t *testing.T, in *servertest.Instance, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := in.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func exec(t *testing.T, in *servertest.Instance, sql string, args ...any) {
	t.Helper()
	if _, err := in.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func joinToken(t *testing.T, in *servertest.Instance, node string, ttl time.Duration) nodes.JoinToken {
	t.Helper()
	jt, err := in.Nodes().CreateJoinToken(context.Background(), nodes.Actor{Name: "test"}, node, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return jt
}

func TestEnrollTokenCases(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.AddNode(t, "media-1", "media", "127.0.0.1:5060", 100)
	ctx := context.Background()

	valid := joinToken(t, in, "media-1", time.Hour)
	used := joinToken(t, in, "media-1", time.Hour)
	if r, _ := api(t, in, "POST", "/api/v1/enroll", "", map[string]string{"token": used.Token}); r.StatusCode != 200 {
		t.Fatalf("first enrolment: %d %s", r.StatusCode, r.Body)
	}
	revoked := joinToken(t, in, "media-1", time.Hour)
	if err := in.Nodes().RevokeJoinToken(ctx, nodes.Actor{Name: "test"}, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expired := joinToken(t, in, "media-1", time.Hour)
	exec(t, in, "UPDATE join_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", expired.ID)
	wrongSecret := valid.Token[:len(valid.Token)-4] + "zzzz"
	if strings.HasSuffix(valid.Token, "zzzz") {
		wrongSecret = valid.Token[:len(valid.Token)-4] + "aaaa"
	}

	cases := []struct{ name, token string }{
		{"malformed", "not-a-token"},
		{"short secret", "cpj_abcdefgh.tooshort"},
		{"unknown id", "cpj_zzzzzzzz.abcdefghijabcdefghijabcdefghijabcdefghij"},
		{"wrong secret", wrongSecret},
		{"expired", expired.Token},
		{"revoked", revoked.Token},
		{"already used", used.Token},
		{"empty", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := count(t, in, "SELECT count(*) FROM node_credentials")
			r, m := api(t, in, "POST", "/api/v1/enroll", "", map[string]string{"token": c.token})
			if r.StatusCode != http.StatusUnauthorized || m["error"] != "invalid or expired credentials" {
				t.Fatalf("status %d body %s", r.StatusCode, r.Body)
			}
			if after := count(t, in, "SELECT count(*) FROM node_credentials"); after != before {
				t.Fatal("a refused enrolment issued a credential")
			}
		})
	}
	// The wrong secret did not consume the real token.
	if n := count(t, in, "SELECT count(*) FROM join_tokens WHERE id = $1 AND used_at IS NULL", valid.ID); n != 1 {
		t.Fatal("a wrong secret consumed the token")
	}
	// Malformed JSON is a 400.
	if r, _ := api(t, in, "POST", "/api/v1/enroll", "", "{not json"); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d", r.StatusCode)
	}
	// The valid token works once, and the credential is stored hashed.
	r, m := api(t, in, "POST", "/api/v1/enroll", "", map[string]string{"token": valid.Token, "version": "1.2.3"})
	if r.StatusCode != 200 || m["node_name"] != "media-1" || !strings.HasPrefix(fmt.Sprint(m["credential"]), "cpn_") {
		t.Fatalf("enrol: %d %s", r.StatusCode, r.Body)
	}
	cred := fmt.Sprint(m["credential"])
	if n := count(t, in, "SELECT count(*) FROM node_credentials WHERE position($1 in encode(secret_hash, 'escape')) > 0", cred); n != 0 {
		t.Fatal("credential stored in clear")
	}
	// Re-enrolment revoked the earlier credential; the new one authenticates.
	if n := count(t, in, "SELECT count(*) FROM node_credentials WHERE revoked_at IS NULL"); n != 1 {
		t.Fatalf("live credentials: %d", n)
	}
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", cred, map[string]any{"load": 0, "version": "1.2.3"}); r.StatusCode != 200 {
		t.Fatalf("heartbeat: %d", r.StatusCode)
	}
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", "cpn_bogus123.abcdefghijabcdefghijabcdefghijabcdefghij", map[string]any{}); r.StatusCode != 401 {
		t.Fatalf("bogus credential: %d", r.StatusCode)
	}
}

func TestEnrollRaceExactlyOneWins(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	in.AddNode(t, "ivr-1", "ivr", "127.0.0.1:5070", 10)
	jt := joinToken(t, in, "ivr-1", time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 50; i++ {
		wg.Go(func() {
			// Each racer from its own address would dodge the per-address
			// throttle in production; here they share one, so call the
			// domain directly for all but a few HTTP racers.
			var code int
			if i < 5 {
				r, _ := api(t, in, "POST", "/api/v1/enroll", "", map[string]string{"token": jt.Token})
				code = r.StatusCode
			} else {
				_, err := in.Nodes().Enroll(context.Background(), nodes.EnrollRequest{Token: jt.Token, RemoteAddr: fmt.Sprintf("10.0.0.%d", i)})
				code = 200
				if err != nil {
					code = 401
				}
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 1 || codes[401] != 49 {
		t.Fatalf("outcomes: %v", codes)
	}
	if n := count(t, in, "SELECT count(*) FROM node_credentials"); n != 1 {
		t.Fatalf("credentials issued: %d", n)
	}
}

func TestEnrollThrottledPerAddress(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	var last int
	for i := 0; i < 22; i++ {
		r, _ := api(t, in, "POST", "/api/v1/enroll", "", map[string]string{"token": "cpj_aaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"})
		last = r.StatusCode
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("22nd attempt: %d", last)
	}
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	tok := in.APIToken(t)
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 10)

	if r, m := api(t, in, "GET", "/api/v1/nodes", "", nil); r.StatusCode != 401 || m["error"] == nil {
		t.Fatalf("no token: %d %s", r.StatusCode, r.Body)
	}
	if r, _ := api(t, in, "GET", "/api/v1/nodes", "cpa_aaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", nil); r.StatusCode != 401 {
		t.Fatalf("bad token: %d", r.StatusCode)
	}
	r, m := api(t, in, "GET", "/api/v1/nodes/m1", tok, nil)
	if r.StatusCode != 200 {
		t.Fatalf("get node: %d", r.StatusCode)
	}
	for _, k := range []string{"name", "kind", "address", "capacity", "weight", "admin_state", "health"} {
		if _, ok := m[k]; !ok {
			t.Errorf("node JSON lacks %s", k)
		}
	}
	if r, m := api(t, in, "GET", "/api/v1/nodes/nope", tok, nil); r.StatusCode != 404 || m["error"] == nil {
		t.Fatalf("unknown node: %d", r.StatusCode)
	}
	for _, action := range []string{"drain", "disable", "enable"} {
		r, m := api(t, in, "POST", "/api/v1/nodes/m1/"+action, tok, nil)
		if r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", action, r.StatusCode, r.Body)
		}
		node := m["node"].(map[string]any)
		want := map[string]string{"drain": "draining", "disable": "disabled", "enable": "enabled"}[action]
		if node["admin_state"] != want {
			t.Fatalf("%s: state %v", action, node["admin_state"])
		}
	}
	if n := count(t, in, "SELECT count(*) FROM audit_log WHERE actor = 'api:test' AND action IN ('node.drain','node.disable','node.enable')"); n != 3 {
		t.Fatalf("audit rows: %d", n)
	}
	if n := count(t, in, "SELECT count(*) FROM events WHERE type = 'admin'"); n != 3 {
		t.Fatalf("events: %d", n)
	}
	// Registration through the API shares the validation.
	r, _ = api(t, in, "POST", "/api/v1/nodes", tok, map[string]any{"name": "m1", "kind": "media", "address": "127.0.0.1:5062", "capacity": 5})
	if r.StatusCode != http.StatusConflict {
		t.Fatalf("duplicate: %d %s", r.StatusCode, r.Body)
	}
	r, m = api(t, in, "POST", "/api/v1/nodes", tok, map[string]any{"name": "x", "kind": "fax", "address": "nowhere", "capacity": 0})
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "kind") || !strings.Contains(fmt.Sprint(m["error"]), "capacity") {
		t.Fatalf("invalid: %d %s", r.StatusCode, r.Body)
	}
	if n := count(t, in, "SELECT count(*) FROM nodes"); n != 1 {
		t.Fatalf("nodes after bad input: %d", n)
	}
	// Revoked tokens stop working.
	id, _, _ := nodes.ParseToken(nodes.PrefixAPI, tok)
	if err := in.Nodes().RevokeAPIToken(context.Background(), nodes.Actor{Name: "test"}, id); err != nil {
		t.Fatal(err)
	}
	if r, _ := api(t, in, "GET", "/api/v1/nodes", tok, nil); r.StatusCode != 401 {
		t.Fatalf("revoked token: %d", r.StatusCode)
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"cpj_abcdefgh.abcdefghijabcdefghijabcdefghijabcdefghij", "cpj_", "cpj_abcdefgh.", "", "cpj_ABCDEFGH.x", "cpa_12345678." + strings.Repeat("a", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := nodes.ParseToken(nodes.PrefixJoin, s)
		if !ok {
			return
		}
		if len(id) != 8 || len(secret) < 32 || s != "cpj_"+id+"."+secret {
			t.Fatalf("accepted %q as id %q secret %q", s, id, secret)
		}
		for _, c := range id + secret {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				t.Fatalf("accepted character %q", c)
			}
		}
	})
}
