package smtptest_test

import (
	"errors"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/alert/smtptest"
)

// send delivers raw with the standard library client, so the sink is tested
// independently of package alert.
func send(addr, from string, to []string, raw string) error {
	return smtp.SendMail(addr, nil, from, to, []byte(strings.ReplaceAll(raw, "\n", "\r\n")))
}

const qpMessage = `From: a@example.com
To: b@example.com
Subject: =?UTF-8?q?Gr=C3=BC=C3=9Fe?=
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=XYZ

--XYZ
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

caf=C3=A9 is a very long line that was soft-wrapped by the quoted-printab=
le encoder, a=3Db
--XYZ
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: base64

PHA+aGk8L3A+
--XYZ--
`

func TestReceiveDecodes(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t)
	if !strings.HasPrefix(s.URL(), "smtp://127.0.0.1:") || !strings.HasSuffix(s.URL(), "?tls=none") {
		t.Errorf("URL = %q", s.URL())
	}
	if err := send(s.Addr(), "a@example.com", []string{"b@example.com", "c@example.com"}, qpMessage); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := s.WaitMessages(t, 1, 5*time.Second)[0]
	if got.From != "a@example.com" || strings.Join(got.To, " ") != "b@example.com c@example.com" {
		t.Errorf("envelope = %q -> %q", got.From, got.To)
	}
	if got.Subject != "Grüße" {
		t.Errorf("Subject = %q", got.Subject)
	}
	want := "café is a very long line that was soft-wrapped by the quoted-printable encoder, a=b"
	if got.Body != want {
		t.Errorf("Body = %q, want %q", got.Body, want)
	}
	if got.HTML != "<p>hi</p>" {
		t.Errorf("HTML = %q", got.HTML)
	}
	if !strings.Contains(got.Data, "Content-Transfer-Encoding: quoted-printable\r\n") {
		t.Errorf("Data is not the raw message: %q", got.Data)
	}
	// Messages returns copies.
	s.Messages()[0].To[0] = "changed"
	if s.Messages()[0].To[0] != "b@example.com" {
		t.Error("Messages shares its slices with the server")
	}
}

func TestPlainBody(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t)
	if err := send(s.Addr(), "a@x.org", []string{"b@x.org"}, "Subject: hi\n\nline 1\nline 2\n"); err != nil {
		t.Fatal(err)
	}
	got := s.WaitMessages(t, 1, 5*time.Second)[0]
	if got.Subject != "hi" || got.Body != "line 1\nline 2\n" {
		t.Errorf("got %q / %q", got.Subject, got.Body)
	}
}

func TestFailNext(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t)
	s.FailNext(451, "try later", 2)
	for i := range 2 {
		err := send(s.Addr(), "a@x.org", []string{"b@x.org"}, "Subject: x\n\nx\n")
		var te *textproto.Error
		if !errors.As(err, &te) || te.Code != 451 || !strings.Contains(te.Msg, "try later") {
			t.Fatalf("send %d: %v, want 451 try later", i, err)
		}
	}
	if err := send(s.Addr(), "a@x.org", []string{"b@x.org"}, "Subject: x\n\nx\n"); err != nil {
		t.Fatalf("third send: %v", err)
	}
	if n := len(s.WaitMessages(t, 1, 5*time.Second)); n != 1 {
		t.Errorf("%d messages recorded, want 1 (refused ones are not)", n)
	}
	s.FailNext(550, "no such user", 1)
	err := send(s.Addr(), "a@x.org", []string{"b@x.org"}, "Subject: x\n\nx\n")
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 550 {
		t.Fatalf("send: %v, want 550", err)
	}
}

func TestStopRestart(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t)
	addr := s.Addr()
	s.Stop()
	s.Stop() // idempotent
	if err := send(addr, "a@x.org", []string{"b@x.org"}, "Subject: x\n\nx\n"); err == nil {
		t.Fatal("send to a stopped server succeeded")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Errorf("Addr changed from %s to %s", addr, s.Addr())
	}
	if err := send(addr, "a@x.org", []string{"b@x.org"}, "Subject: x\n\nx\n"); err != nil {
		t.Fatalf("send after Restart: %v", err)
	}
	s.WaitMessages(t, 1, 5*time.Second)
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t)
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := send(s.Addr(), "a@x.org", []string{"b@x.org"}, "Subject: x\n\nx\n"); err != nil {
				t.Errorf("send %d: %v", i, err)
			}
		})
		wg.Go(func() { _ = s.Messages() })
	}
	if got := len(s.WaitMessages(t, n, 10*time.Second)); got != n {
		t.Errorf("got %d messages, want %d", got, n)
	}
	wg.Wait()
}

// fakeTB records a Fatalf instead of ending the test, to check the
// timeout path of WaitMessages.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = format
}

func TestWaitMessagesTimesOut(t *testing.T) {
	t.Parallel()
	s := smtptest.Start(t)
	ft := &fakeTB{TB: t}
	start := time.Now()
	if got := s.WaitMessages(ft, 1, 100*time.Millisecond); got != nil {
		t.Errorf("WaitMessages = %v, want nil after timeout", got)
	}
	if ft.failed == "" || time.Since(start) > 2*time.Second {
		t.Errorf("WaitMessages did not fail in time (failed=%q after %v)", ft.failed, time.Since(start))
	}
}
