package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/alert/smtptest"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/server/servertest"
)

func settingsForm(smtpURL string) url.Values {
	f := url.Values{}
	for k, v := range settings.Builtin().Values() {
		f.Set(k, v)
	}
	f.Set(settings.KeySMTPURL, smtpURL)
	f.Set(settings.KeyAlertFrom, "Callplane <alerts@example.com>")
	f.Set(settings.KeyAlertTo, "ops@example.com, oncall@example.com")
	return f
}

func settingRows(t *testing.T, in *servertest.Instance) int {
	t.Helper()
	var n int
	if err := in.Pool().QueryRow(context.Background(), "SELECT count(*) FROM settings WHERE key NOT LIKE 'instance:%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSettingsInvalidSaveNothing(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{})
	admin := in.User(t, "admin@example.com", "admin")
	f := settingsForm("http://user:hunter2hunter2@mail.example.com")
	f.Set(settings.KeyFailThreshold, "0")
	f.Set(settings.KeyProbeTimeout, "2s")
	f.Set(settings.KeyAlertTo, "")
	r := in.PostForm(t, admin, "/settings", f)
	if r.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("invalid settings: status %d", r.StatusCode)
	}
	for _, id := range []string{"error-smtp_url", "error-fail_threshold", "error-probe_timeout", "error-alert_to"} {
		if _, ok := servertest.TestID(r.Body, id); !ok {
			t.Errorf("no %s in the page", id)
		}
	}
	if strings.Contains(r.Body, "hunter2hunter2") {
		t.Error("the page echoes the SMTP password")
	}
	if n := settingRows(t, in); n != 0 {
		t.Fatalf("invalid save stored %d settings", n)
	}
	if auditCount(t, in, "settings.update", "error") != 1 || auditCount(t, in, "settings.update", "ok") != 0 {
		t.Fatal("refused save not audited as an error")
	}
}

func TestSettingsSaveViewAndTestEmail(t *testing.T) {
	t.Parallel()
	sink := smtptest.Start(t)
	in := servertest.Start(t, servertest.Options{})
	admin := in.User(t, "admin@example.com", "admin")
	viewer := in.User(t, "viewer@example.com", "viewer")

	// Before any save, the page works and says mail is not configured.
	r := in.Get(t, viewer, "/settings")
	if r.StatusCode != http.StatusOK {
		t.Fatalf("viewer GET /settings: %d", r.StatusCode)
	}
	if _, ok := servertest.TestID(r.Body, "mail-not-ready"); !ok {
		t.Error("no mail-not-ready notice before configuration")
	}

	// A valid save with a password in the URL.
	u, _ := url.Parse(sink.URL())
	u.User = url.UserPassword("alerts", "hunter2hunter2")
	f := settingsForm(u.String())
	f.Set(settings.PolicyKey("ivr"), settings.PolicyAuto)
	f.Set(settings.KeyProbeInterval, "2s")
	r = in.PostForm(t, admin, "/settings", f)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("valid save: status %d\n%s", r.StatusCode, r.Body)
	}
	if n := settingRows(t, in); n != len(settings.Keys()) {
		t.Fatalf("saved %d settings; want %d", n, len(settings.Keys()))
	}
	if auditCount(t, in, "settings.update", "ok") != 1 {
		t.Fatal("save not audited")
	}
	var stored, detail string
	_ = in.Pool().QueryRow(context.Background(), "SELECT value FROM settings WHERE key = 'policy_ivr'").Scan(&stored)
	_ = in.Pool().QueryRow(context.Background(), "SELECT detail FROM audit_log WHERE action = 'settings.update'").Scan(&detail)
	if stored != "auto" || strings.Contains(detail, "hunter2hunter2") {
		t.Fatalf("policy_ivr %q; audit detail %q", stored, detail)
	}

	// Viewers see the settings, redacted, and may not change them.
	r = in.Get(t, viewer, "/settings")
	if !strings.Contains(r.Body, "alerts:xxxxx@") || strings.Contains(r.Body, "hunter2hunter2") {
		t.Fatalf("viewer page shows the SMTP URL wrongly:\n%s", r.Body)
	}
	if !strings.Contains(r.Body, `value="2s"`) {
		t.Error("saved interval not shown")
	}
	if r := in.PostForm(t, viewer, "/settings", f); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer POST /settings: %d", r.StatusCode)
	}
	if r := in.PostForm(t, viewer, "/settings/test-email", url.Values{}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("viewer POST /settings/test-email: %d", r.StatusCode)
	}

	// Saving the form as shown keeps the stored password.
	shown := settingsForm(u.String())
	shown.Set(settings.KeySMTPURL, strings.Replace(u.String(), "hunter2hunter2", "xxxxx", 1))
	shown.Set(settings.PolicyKey("ivr"), settings.PolicyAuto)
	shown.Set(settings.KeyProbeInterval, "2s")
	if r := in.PostForm(t, admin, "/settings", shown); r.StatusCode != http.StatusOK {
		t.Fatalf("save as shown: %d", r.StatusCode)
	}
	_ = in.Pool().QueryRow(context.Background(), "SELECT value FROM settings WHERE key = 'smtp_url'").Scan(&stored)
	if !strings.Contains(stored, "hunter2hunter2") {
		t.Fatalf("saving the redacted URL lost the password: %q", stored)
	}

	// The sink has no AUTH: use a URL without credentials for the test email.
	if r := in.PostForm(t, admin, "/settings", settingsForm(sink.URL())); r.StatusCode != http.StatusOK {
		t.Fatalf("save sink URL: %d", r.StatusCode)
	}
	r = in.HTMX(t, admin, http.MethodPost, "/settings/test-email", url.Values{})
	reply, ok := servertest.TestID(r.Body, "test-email-result")
	if r.StatusCode != http.StatusOK || !ok || !strings.HasPrefix(reply, "250") {
		t.Fatalf("test email: status %d reply %q\n%s", r.StatusCode, reply, r.Body)
	}
	if strings.Contains(r.Body, "<html") {
		t.Error("htmx test email answered a full page")
	}
	msgs := sink.WaitMessages(t, 1, 5*time.Second)
	if msgs[0].Subject != "[Callplane] Test email" || len(msgs[0].To) != 2 {
		t.Fatalf("test email %q to %v", msgs[0].Subject, msgs[0].To)
	}
	if auditCount(t, in, "settings.test_email", "ok") != 1 {
		t.Fatal("test email not audited")
	}

	// A failing server's answer is shown too.
	sink.FailNext(550, "relay denied", 1)
	r = in.HTMX(t, admin, http.MethodPost, "/settings/test-email", url.Values{})
	if reply, _ := servertest.TestID(r.Body, "test-email-result"); !strings.Contains(reply, "550") {
		t.Fatalf("failed test email reply %q", reply)
	}
}
