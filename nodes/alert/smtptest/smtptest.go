package smtptest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Received is one message the server accepted.
type Received struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO), in order.
	To []string
	// Data is the full raw message as received, headers included, with
	// CRLF line endings.
	Data string
	// Header holds the parsed message header; nil if it did not parse.
	Header mail.Header
	// Subject is the decoded Subject header.
	Subject string
	// Body is the decoded text/plain part (the whole body for a
	// single-part message), transfer encoding (quoted-printable, base64)
	// undone.
	Body string
	// HTML is the decoded text/html part, if any.
	HTML string
}

// Server is an SMTP server on loopback that records what it receives.
// All methods are safe for concurrent use.
type Server struct {
	t    testing.TB
	addr string

	mu       sync.Mutex
	cond     chan struct{} // closed and replaced whenever msgs grows
	msgs     []Received
	failCode int
	failMsg  string
	failLeft int
	user     string // required AUTH PLAIN credentials; none when empty
	pass     string
	srv      *smtp.Server
	ln       net.Listener
	served   chan struct{} // closed when srv's Serve returns
}

// Start listens on 127.0.0.1 on a free port and serves until the test
// ends. The server offers no STARTTLS and no AUTH, so clients must connect
// with tls=none (see URL).
func Start(t testing.TB) *Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s := &Server{t: t, addr: l.Addr().String(), cond: make(chan struct{})}
	s.serve(l)
	t.Cleanup(s.Stop)
	return s
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// URL returns the --smtp-url that reaches this server.
func (s *Server) URL() string { return "smtp://" + s.addr + "?tls=none" }

// Messages returns a copy of the messages received so far, oldest first.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneAll(s.msgs)
}

// WaitMessages waits until at least n messages have arrived and returns
// all of them. After timeout it fails the test, listing what did arrive.
// Call it from the test's goroutine.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []Received {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			msgs := cloneAll(s.msgs)
			s.mu.Unlock()
			return msgs
		}
		changed := s.cond
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			got := s.Messages()
			var b strings.Builder
			for i, m := range got {
				fmt.Fprintf(&b, "\n  %d: from %s to %v: %q", i+1, m.From, m.To, m.Subject)
			}
			t.Fatalf("smtptest: waited %v for %d messages, got %d:%s", timeout, n, len(got), b.String())
			return nil
		}
	}
}

// FailNext makes the next times DATA commands answer code and msg instead
// of accepting the message: 451 for a temporary failure, 550 for a
// permanent one. Refused messages are not recorded.
func (s *Server) FailNext(code int, msg string, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failCode, s.failMsg, s.failLeft = code, msg, times
}

// RequireAuth makes the server offer AUTH PLAIN (over the clear
// connection, as a local sink does) and refuse MAIL FROM until a client has
// logged in as user with pass. It applies to new connections.
func (s *Server) RequireAuth(user, pass string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user, s.pass = user, pass
}

// Stop closes the listener and every open connection, so that clients get
// "connection refused" as from a mail server that is down. It is safe to
// call more than once; the test's cleanup calls it too.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, ln, served := s.srv, s.ln, s.served
	s.srv, s.ln, s.served = nil, nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	// Serve registers its listener with srv in its own goroutine, which
	// may not have run yet: close the listener here too, so Serve cannot
	// block in Accept after Close.
	_ = ln.Close()
	<-served
}

// Restart listens again on the address of Start, after Stop. It retries
// for up to two seconds in case the port is still held, then fails the
// test. Call it from the test's goroutine.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if running {
		return
	}
	var l net.Listener
	var err error
	for range 40 {
		if l, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("smtptest: listen again on %s: %v", s.addr, err)
	}
	s.serve(l)
}

func (s *Server) serve(l net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{s: s}, nil
	}))
	srv.Domain = "smtptest.localhost"
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	// go-smtp logs accept and connection errors; those are expected when
	// tests stop the server, and t.Log may not be called after a test
	// ends.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	// AUTH is only advertised once RequireAuth is called.
	srv.AllowInsecureAuth = true
	served := make(chan struct{})
	s.mu.Lock()
	s.srv, s.ln, s.served = srv, l, served
	s.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
}

// failure returns the reply to give instead of accepting a message, if
// one is scheduled.
func (s *Server) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failLeft <= 0 {
		return nil
	}
	s.failLeft--
	return &smtp.SMTPError{Code: s.failCode, EnhancedCode: smtp.EnhancedCodeNotSet, Message: s.failMsg}
}

func (s *Server) record(m Received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.cond)
	s.cond = make(chan struct{})
}

// session is one SMTP connection's transaction state.
type session struct {
	s      *Server
	authed bool
	from   string
	to     []string
}

func (ss *session) credentials() (user, pass string) {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	return ss.s.user, ss.s.pass
}

// AuthMechanisms offers PLAIN when RequireAuth was called, else nothing,
// which leaves AUTH out of the EHLO reply.
func (ss *session) AuthMechanisms() []string {
	if user, _ := ss.credentials(); user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

// Auth checks PLAIN credentials against RequireAuth's.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	user, pass := ss.credentials()
	if mech != sasl.Plain || user == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, u, p string) error {
		if u != user || p != pass {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if user, _ := ss.credentials(); user != "" && !ss.authed {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := ss.s.failure(); err != nil {
		return err
	}
	m := parse(raw)
	m.From, m.To = ss.from, append([]string(nil), ss.to...)
	ss.s.record(m)
	return nil
}

// parse decodes what tests assert on. A message that does not parse is
// still recorded, with Data only.
func parse(raw []byte) Received {
	m := Received{Data: string(raw)}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return m
	}
	m.Header = msg.Header
	dec := new(mime.WordDecoder)
	if subj, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = subj
	} else {
		m.Subject = msg.Header.Get("Subject")
	}
	walk(&m, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	return m
}

// walk finds the text/plain and text/html parts, descending into
// multiparts, and keeps the first of each.
func walk(m *Received, contentType, encoding string, body io.Reader) {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if contentType == "" || err != nil {
		mediaType = "text/plain"
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return
			}
			walk(m, p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
		}
	}
	var target *string
	switch mediaType {
	case "text/plain":
		target = &m.Body
	case "text/html":
		target = &m.HTML
	default:
		return
	}
	if *target != "" {
		return
	}
	b, err := io.ReadAll(decode(encoding, body))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	*target = strings.ReplaceAll(string(b), "\r\n", "\n")
}

func decode(encoding string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, newlineStripper{r})
	}
	return r
}

// newlineStripper drops CR and LF, which base64 bodies are folded with.
type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	for {
		c, err := n.r.Read(p)
		k := 0
		for _, b := range p[:c] {
			if b != '\r' && b != '\n' {
				p[k] = b
				k++
			}
		}
		if k > 0 || err != nil {
			return k, err
		}
	}
}

func cloneAll(msgs []Received) []Received {
	out := make([]Received, len(msgs))
	for i, m := range msgs {
		m.To = append([]string(nil), m.To...)
		if m.Header != nil {
			h := make(mail.Header, len(m.Header))
			for k, v := range m.Header {
				h[k] = append([]string(nil), v...)
			}
			m.Header = h
		}
		out[i] = m
	}
	return out
}
