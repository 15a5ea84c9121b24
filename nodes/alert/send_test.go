package alert_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/alert"
	"github.com/callplane/callplane/nodes/alert/smtptest"
)

// setup starts a mail sink and returns it with a Sender pointed at it.
func setup(t *testing.T, timeout time.Duration) (*smtptest.Server, *alert.Sender) {
	t.Helper()
	sink := smtptest.Start(t)
	cfg, err := alert.ParseSMTPURL(sink.URL())
	if err != nil {
		t.Fatalf("ParseSMTPURL(%q): %v", sink.URL(), err)
	}
	return sink, alert.NewSender(cfg, timeout)
}

func testMessage() alert.Message {
	return alert.Message{
		From:    "Callplane <alerts@callplane.example>",
		To:      []string{"ops@example.com", "Night Shift <oncall@example.org>"},
		Subject: "[Callplane] DOWN: media-1 (media) — ünïcode",
		Text:    "Node media-1 (media) is DOWN.\n\nA line that is long enough to be wrapped by quoted-printable encoding, surely, with = signs and trailing spaces   \nend\n",
	}
}

func TestSendDelivers(t *testing.T) {
	t.Parallel()
	sink, s := setup(t, 5*time.Second)
	m := testMessage()
	m.HTML = "<p>Node <b>media-1</b> is down</p>"
	m.ID = "outbox/42"
	m.Headers = map[string]string{"X-Callplane-Node": "media-1"}
	reply, err := s.Send(context.Background(), m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if !strings.HasPrefix(reply, "250 ") {
		t.Errorf("reply = %q, want the server's 250 answer", reply)
	}
	got := sink.WaitMessages(t, 1, 5*time.Second)[0]
	if got.From != "alerts@callplane.example" {
		t.Errorf("envelope from = %q", got.From)
	}
	if strings.Join(got.To, ",") != "ops@example.com,oncall@example.org" {
		t.Errorf("envelope to = %q", got.To)
	}
	if got.Subject != m.Subject {
		t.Errorf("subject = %q, want %q", got.Subject, m.Subject)
	}
	if got.Body != m.Text {
		t.Errorf("body = %q, want %q", got.Body, m.Text)
	}
	if got.HTML != m.HTML {
		t.Errorf("html = %q, want %q", got.HTML, m.HTML)
	}
	h := got.Header
	if id := h.Get("Message-Id"); id != "<callplane-alert.outbox-42@callplane.example>" {
		t.Errorf("Message-ID = %q", id)
	}
	if v := h.Get(alert.HeaderAlertID); v != "outbox/42" {
		t.Errorf("%s = %q", alert.HeaderAlertID, v)
	}
	if v := h.Get("X-Callplane-Node"); v != "media-1" {
		t.Errorf("X-Callplane-Node = %q", v)
	}
	if v := h.Get("Auto-Submitted"); v != "auto-generated" {
		t.Errorf("Auto-Submitted = %q", v)
	}
	if h.Get("Date") == "" || !strings.Contains(h.Get("From"), "alerts@callplane.example") {
		t.Errorf("Date/From missing in header %v", h)
	}
}

func TestSendRandomMessageID(t *testing.T) {
	t.Parallel()
	sink, s := setup(t, 5*time.Second)
	for range 2 {
		if _, err := s.Send(context.Background(), testMessage()); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	msgs := sink.WaitMessages(t, 2, 5*time.Second)
	a, b := msgs[0].Header.Get("Message-Id"), msgs[1].Header.Get("Message-Id")
	if !strings.HasPrefix(a, "<") || !strings.HasSuffix(a, "@callplane.example>") || a == b {
		t.Errorf("Message-IDs %q and %q: want two distinct ids at the sender's domain", a, b)
	}
	if msgs[0].Header.Get(alert.HeaderAlertID) != "" {
		t.Errorf("%s set without an ID", alert.HeaderAlertID)
	}
}

func TestSendClassifiesFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code      int
		permanent bool
	}{
		{451, false},
		{421, false},
		{550, true},
		{554, true},
	}
	for _, tt := range tests {
		sink, s := setup(t, 5*time.Second)
		sink.FailNext(tt.code, "no thanks", 1)
		_, err := s.Send(context.Background(), testMessage())
		if err == nil {
			t.Fatalf("code %d: Send succeeded", tt.code)
		}
		if got := alert.IsPermanent(err); got != tt.permanent {
			t.Errorf("code %d: IsPermanent(%v) = %v", tt.code, err, got)
		}
		if got := err != nil && !alert.IsPermanent(err); got == tt.permanent {
			t.Errorf("code %d: temporary(%v) = %v", tt.code, err, got)
		}
		if !strings.Contains(err.Error(), "no thanks") {
			t.Errorf("code %d: error %q does not carry the server's reply", tt.code, err)
		}
		// The failure was one-shot: the retry goes through.
		if _, err := s.Send(context.Background(), testMessage()); err != nil {
			t.Errorf("code %d: retry: %v", tt.code, err)
		}
		if n := len(sink.Messages()); n != 1 {
			t.Errorf("code %d: %d messages recorded, want 1", tt.code, n)
		}
	}
}

func TestSendServerDown(t *testing.T) {
	t.Parallel()
	sink, s := setup(t, 2*time.Second)
	sink.Stop()
	start := time.Now()
	_, err := s.Send(context.Background(), testMessage())
	if err == nil {
		t.Fatal("Send to a stopped server succeeded")
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("Send took %v, longer than its timeout", time.Since(start))
	}
	if err == nil || alert.IsPermanent(err) {
		t.Errorf("connection refused: IsPermanent=%v (%v)", alert.IsPermanent(err), err)
	}
	sink.Restart()
	if _, err := s.Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send after Restart: %v", err)
	}
	sink.WaitMessages(t, 1, 5*time.Second)
}

// A server that accepts the connection but never greets must not hang the
// caller (mail.Dialer would: it reads the greeting before setting a
// deadline).
func TestSendSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	cfg, _ := alert.ParseSMTPURL("smtp://" + l.Addr().String() + "?tls=none")

	start := time.Now()
	_, err = alert.NewSender(cfg, 300*time.Millisecond).Send(context.Background(), testMessage())
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Send took %v with a 300ms timeout", took)
	}
	if err == nil || alert.IsPermanent(err) {
		t.Fatalf("Send = %v, want a temporary error", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not say it timed out", err)
	}

	// The caller's context cuts it shorter still.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = alert.NewSender(cfg, time.Minute).Send(ctx, testMessage())
	if took := time.Since(start); took > 2*time.Second || err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Send = %v after %v, want context.Canceled quickly", err, took)
	}
}

func TestSendRequiresStartTLS(t *testing.T) {
	t.Parallel()
	sink := smtptest.Start(t)
	cfg, err := alert.ParseSMTPURL("smtp://user:hunter2@" + sink.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, err = alert.NewSender(cfg, 5*time.Second).Send(context.Background(), testMessage())
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") || !strings.Contains(err.Error(), "tls=none") {
		t.Fatalf("Send without STARTTLS = %v, want a refusal that names tls=none", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %v", err)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("%d messages delivered in the clear", n)
	}
}

func TestSendInvalidMessage(t *testing.T) {
	t.Parallel()
	_, s := setup(t, 5*time.Second)
	bad := []func(*alert.Message){
		func(m *alert.Message) { m.From = "not an address" },
		func(m *alert.Message) { m.To = nil },
		func(m *alert.Message) { m.To = []string{"ops@"} },
		func(m *alert.Message) { m.Subject = "a\r\nBcc: evil@example.com" },
		func(m *alert.Message) { m.Headers = map[string]string{"X-A": "b\nBcc: evil@example.com"} },
		func(m *alert.Message) { m.Headers = map[string]string{"Bcc": "evil@example.com"} },
		func(m *alert.Message) { m.Headers = map[string]string{"Bad Name": "x"} },
	}
	for i, mutate := range bad {
		m := testMessage()
		mutate(&m)
		_, err := s.Send(context.Background(), m)
		if !errors.Is(err, alert.ErrInvalidMessage) || !alert.IsPermanent(err) {
			t.Errorf("case %d: Send = %v, want a permanent ErrInvalidMessage", i, err)
		}
	}
}

func TestClassifyNil(t *testing.T) {
	t.Parallel()
	if alert.IsPermanent(nil) {
		t.Error("nil error classified")
	}
	if alert.IsPermanent(errors.New("something odd")) {
		t.Error("unknown error not temporary")
	}
}

func TestSendAuth(t *testing.T) {
	t.Parallel()
	sink := smtptest.Start(t)
	sink.RequireAuth("alerts", "hunter2")

	// Loopback may take a password in the clear (a local sink).
	ok, _ := alert.ParseSMTPURL("smtp://alerts:hunter2@" + sink.Addr() + "?tls=none")
	if _, err := alert.NewSender(ok, 5*time.Second).Send(context.Background(), testMessage()); err != nil {
		t.Fatalf("Send with the right password: %v", err)
	}
	sink.WaitMessages(t, 1, 5*time.Second)

	bad, _ := alert.ParseSMTPURL("smtp://alerts:wrong-pw@" + sink.Addr() + "?tls=none")
	_, err := alert.NewSender(bad, 5*time.Second).Send(context.Background(), testMessage())
	if err == nil || !alert.IsPermanent(err) {
		t.Fatalf("Send with a wrong password = %v, want a permanent (535) error", err)
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("error leaks the password: %v", err)
	}

	none, _ := alert.ParseSMTPURL(sink.URL())
	_, err = alert.NewSender(none, 5*time.Second).Send(context.Background(), testMessage())
	if err == nil || !alert.IsPermanent(err) {
		t.Fatalf("Send without logging in = %v, want a permanent (502) error", err)
	}
}
