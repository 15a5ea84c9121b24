package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

func TestCallsViewShowsTheFrontDoorAndSavesItsSettings(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes, Configure: func(c *server.Config) {
		c.SIPListen, c.SIPPublic = "127.0.0.1:0", "sip.example.com:5060"
	}})
	in.AddNode(t, "m1", "media", "127.0.0.1:5999", 10)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO sip_calls (ref, call_id, from_tag, state, cause, tries, ended_at) VALUES
			('sip:a', 'a', 'x', 'failed', 'no media node available', 0, now()),
			('sip:b', 'b', 'x', 'failed', 'no media node available', 0, now())`,
		`INSERT INTO sip_calls (ref, call_id, from_tag, state, cause, failovers) VALUES ('sip:c', 'c', 'x', 'answered', '', '{503}')`,
	} {
		if _, err := in.Pool().Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	viewer := in.User(t, "viewer@example.com", "viewer")
	r := in.Get(t, viewer, "/calls")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("GET /calls: %d", r.StatusCode)
	}
	for id, want := range map[string]string{
		"sip-listen":                         in.SIP().Addr(),
		"sip-public":                         "sip.example.com:5060",
		"calls-recent":                       "3",
		"calls-failed":                       "2",
		"cause-call-no media node available": "2",
		"cause-try-503":                      "1",
		"calls-live-m1":                      "0",
	} {
		if got, ok := servertest.TestID(r.Body, id); !ok || got != want {
			t.Errorf("%s = %q, want %q", id, got, want)
		}
	}
	if !strings.Contains(r.Body, `data-testid="nav-calls"`) {
		t.Error("no Calls link in the navigation")
	}
	// The htmx poll gets the live region alone.
	if p := in.HTMX(t, viewer, "GET", "/calls", nil); !strings.Contains(p.Body, `id="calls-live"`) || strings.Contains(p.Body, "<html") {
		t.Fatalf("htmx poll did not get the live partial alone: %.200s", p.Body)
	}
	// A viewer cannot change the settings.
	form := url.Values{"sip_tries": {"2"}, "sip_try_timeout": {"3s"}, "sip_max_call_duration": {"2h"}}
	if p := in.PostForm(t, viewer, "/calls/settings", form); p.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer saving settings: %d", p.StatusCode)
	}

	admin := in.User(t, "admin@example.com", "admin")
	bad := url.Values{"sip_tries": {"0"}, "sip_try_timeout": {"soon"}, "sip_max_call_duration": {"2h"}}
	p := in.PostForm(t, admin, "/calls/settings", bad)
	if p.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("invalid settings: %d", p.StatusCode)
	}
	for _, id := range []string{"error-sip_tries", "error-sip_try_timeout"} {
		if _, ok := servertest.TestID(p.Body, id); !ok {
			t.Errorf("no %s", id)
		}
	}
	var n int
	_ = in.Pool().QueryRow(ctx, "SELECT count(*) FROM settings WHERE key LIKE 'sip\\_%'").Scan(&n)
	if n != 0 {
		t.Fatalf("%d settings saved from an invalid form", n)
	}
	if p := in.PostForm(t, admin, "/calls/settings", form); p.StatusCode != http.StatusOK && p.StatusCode != http.StatusSeeOther {
		t.Fatalf("valid settings: %d", p.StatusCode)
	}
	var audited int
	_ = in.Pool().QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE action = 'sip.settings' AND actor = 'admin@example.com'").Scan(&audited)
	if audited != 2 {
		t.Fatalf("audit rows for the refused and the saved change = %d, want 2", audited)
	}
	// The running front door takes the new values.
	deadline := time.Now().Add(60 * time.Second)
	for in.SIP().Settings().Tries != 2 || in.SIP().Settings().MaxDuration != 2*time.Hour {
		if time.Now().After(deadline) {
			t.Fatalf("front door settings = %s, want tries 2 and 2h", in.SIP().Settings())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
