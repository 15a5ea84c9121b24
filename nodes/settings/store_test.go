package settings

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

var admin = nodes.Actor{Name: "admin@example.com", Addr: "192.0.2.1"}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func auditDetails(t *testing.T, pool *pgxpool.Pool, action string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT result || ' ' || detail FROM audit_log WHERE action = $1 ORDER BY id", action)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// Save validates, writes every setting and audits what changed (never
// the SMTP password) in one transaction; refused input writes nothing;
// the redacted SMTP URL the form shows back keeps the stored password;
// the command line's values hold until a save.
func TestStoreSave(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	s := NewStore(pool, Defaults{AlertTo: "cli@example.com"}, "https://portal.example", nil)
	st, err := s.Load(ctx)
	if err != nil || st.AlertTo != "cli@example.com" || st.ProbeInterval != Builtin().ProbeInterval {
		t.Fatalf("defaults: %v %+v", err, st)
	}

	bad := validValues()
	bad[KeyFailThreshold] = "0"
	_, err = s.Save(ctx, admin, bad)
	var fe problem.FieldErrors
	if !errors.As(err, &fe) || fe[KeyFailThreshold] == "" || len(fe) != 1 {
		t.Fatalf("invalid save: %v, want field errors naming %s only", err, KeyFailThreshold)
	}
	if n := count(t, pool, "SELECT count(*) FROM settings"); n != 0 {
		t.Fatalf("refused save wrote %d settings", n)
	}
	if a := auditDetails(t, pool, "settings.update"); len(a) != 0 {
		t.Fatalf("refused save audited as a change: %v", a)
	}

	form := validValues()
	form[KeyProbeInterval] = "2s"
	if st, err = s.Save(ctx, admin, form); err != nil || st.ProbeInterval != 2*time.Second {
		t.Fatalf("save: %v %+v", err, st)
	}
	if n := count(t, pool, "SELECT count(*) FROM settings WHERE updated_by = $1", admin.Name); n != len(Keys()) {
		t.Fatalf("saved %d settings, want %d", n, len(Keys()))
	}
	a := auditDetails(t, pool, "settings.update")
	if len(a) != 1 || !strings.HasPrefix(a[0], "ok ") || !strings.Contains(a[0], `probe_interval: "750ms" -> "2s"`) {
		t.Fatalf("audit of the save: %q", a)
	}
	if strings.Contains(a[0], "s3cret") {
		t.Fatalf("audit row holds the SMTP password: %q", a[0])
	}
	if st, _ = s.Load(ctx); st.ProbeInterval != 2*time.Second || st.AlertTo != form[KeyAlertTo] {
		t.Fatalf("load after save: %+v", st)
	}

	// The form shows the URL redacted; sent back unchanged, the stored
	// password stays.
	again := st.Values()
	again[KeySMTPURL] = st.SMTPRedacted()
	if st, err = s.Save(ctx, admin, again); err != nil || !strings.Contains(st.SMTPURL, "s3cret") {
		t.Fatalf("save with the redacted URL: %v, URL kept %v", err, strings.Contains(st.SMTPURL, "s3cret"))
	}
	if a := auditDetails(t, pool, "settings.update"); len(a) != 2 || a[1] != "ok no change" {
		t.Fatalf("audit of an unchanged save: %q", a)
	}
}

// SaveSIP validates the front door's settings, writes them with an audit
// row, and writes nothing when a field is wrong.
func TestStoreSaveSIP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	s := NewStore(pool, Defaults{}, "", nil)
	_, err := s.SaveSIP(ctx, admin, map[string]string{KeySIPTries: "0", KeySIPTryTimeout: "2s", KeySIPMaxDuration: "4h"})
	var fe problem.FieldErrors
	if !errors.As(err, &fe) || fe[KeySIPTries] == "" || len(fe) != 1 {
		t.Fatalf("invalid SIP save: %v, want field errors naming %s only", err, KeySIPTries)
	}
	if n := count(t, pool, "SELECT count(*) FROM settings"); n != 0 {
		t.Fatalf("refused SIP save wrote %d settings", n)
	}
	st, err := s.SaveSIP(ctx, admin, map[string]string{KeySIPTries: "5", KeySIPTryTimeout: "1500ms", KeySIPMaxDuration: "2h"})
	if err != nil || st.Tries != 5 || st.TryTimeout != 1500*time.Millisecond || st.MaxDuration != 2*time.Hour {
		t.Fatalf("SIP save: %v %+v", err, st)
	}
	if n := count(t, pool, "SELECT count(*) FROM settings WHERE key LIKE 'sip\\_%' AND updated_by = $1", admin.Name); n != len(SIPKeys()) {
		t.Fatalf("saved %d SIP settings, want %d", n, len(SIPKeys()))
	}
	if a := auditDetails(t, pool, "sip.settings"); len(a) != 1 || !strings.Contains(a[0], "sip_tries:5") {
		t.Fatalf("audit of the SIP save: %q", a)
	}
}

func TestParseSIP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v     map[string]string
		want  SIP
		field string
	}{
		{map[string]string{}, DefaultSIP(), ""},
		{map[string]string{KeySIPTries: "10", KeySIPTryTimeout: "100ms", KeySIPMaxDuration: "168h"}, SIP{10, 100 * time.Millisecond, 168 * time.Hour}, ""},
		{map[string]string{KeySIPTries: "11"}, DefaultSIP(), KeySIPTries},
		{map[string]string{KeySIPTryTimeout: "33s"}, DefaultSIP(), KeySIPTryTimeout},
		{map[string]string{KeySIPMaxDuration: "59s"}, DefaultSIP(), KeySIPMaxDuration},
	} {
		got, fe := ParseSIP(tc.v)
		if got != tc.want || (tc.field == "" && len(fe) > 0) || (tc.field != "" && (fe[tc.field] == "" || len(fe) != 1)) {
			t.Errorf("ParseSIP(%v) = %+v, %v; want %+v and an error on %q", tc.v, got, fe, tc.want, tc.field)
		}
	}
}

// A test email without SMTP settings is refused, and the refusal audited.
func TestSendTestUnconfigured(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	s := NewStore(pool, Defaults{}, "", nil)
	res, err := s.SendTest(context.Background(), admin)
	if err != nil || res.OK || res.Reply != ErrNoSMTP.Error() {
		t.Fatalf("test email without SMTP: %v %+v", err, res)
	}
	if a := auditDetails(t, pool, "settings.test_email"); len(a) != 1 || a[0] != "error "+ErrNoSMTP.Error() {
		t.Fatalf("audit of the refused test email: %q", a)
	}
}
