package alert

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	gomail "github.com/go-mail/mail/v2"
)

// HeaderAlertID carries the stable id of an alert (Message.ID), so that
// mail filters and humans can tell one alert from another and recognise a
// resend of the same one.
const HeaderAlertID = "X-Callplane-Alert"

// DefaultTimeout bounds a send when NewSender is given no timeout.
const DefaultTimeout = 30 * time.Second

// ErrInvalidMessage is returned (wrapped) by Send for a message that no
// server would ever accept as it stands: a bad From or To address, a header
// with a line break. Retrying cannot help, so IsPermanent reports true.
var ErrInvalidMessage = errors.New("invalid message")

// Message is one email to send.
type Message struct {
	// From is the sender, with or without a display name
	// ("Callplane <alerts@example.com>").
	From string
	// To are the recipients; at least one.
	To []string
	// Subject is the subject line; non-ASCII is encoded as needed.
	Subject string
	// Text is the plain-text body. It always comes first: it is what
	// most operators read.
	Text string
	// HTML is an optional alternative body.
	HTML string
	// ID is an optional stable id of the alert (for instance its outbox
	// row id). When set it is sent as X-Callplane-Alert and the Message-ID
	// is derived from it, so a message resent after an unclear failure
	// (the connection died after DATA) carries the same Message-ID and
	// can be recognised as a duplicate.
	ID string
	// Headers are extra header fields. They may set Message-ID, but not
	// From, To, Cc, Bcc, Subject or the MIME structure.
	Headers map[string]string
}

// Sender delivers messages to one SMTP server. It is safe for concurrent
// use; every Send opens its own connection, which suits a trickle of
// alerts and leaves no idle connection for the server to drop.
type Sender struct {
	cfg     SMTP
	timeout time.Duration
	// tlsConfig verifies the server certificate for STARTTLS and
	// implicit TLS against the system roots.
	tlsConfig *tls.Config
	helo      string
}

// NewSender returns a Sender for cfg. Each Send, from dialling to the
// server's last reply, takes at most timeout (DefaultTimeout when zero or
// negative), or less when its context says so.
func NewSender(cfg SMTP, timeout time.Duration) *Sender {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	helo, err := os.Hostname()
	if err != nil || helo == "" || strings.ContainsAny(helo, " \r\n") {
		helo = "localhost"
	}
	return &Sender{
		cfg:       cfg,
		timeout:   timeout,
		tlsConfig: &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12},
		helo:      helo,
	}
}

// Send delivers m and returns the server's final reply to the message
// (for example "250 2.0.0 OK: queued as 3F2A1"), which the portal shows
// after a test email. The whole exchange is bounded by the Sender's timeout
// and by ctx. Classify a failure with IsPermanent: every other failure (4xx
// replies, refused connections, timeouts) is retried with backoff.
//
// Once the server has accepted the message, a failure to say goodbye
// (QUIT) is ignored: the message is on its way and reporting an error
// would make the caller send it twice.
func (s *Sender) Send(ctx context.Context, m Message) (reply string, err error) {
	msg, err := s.build(m)
	if err != nil {
		return "", fmt.Errorf("send email: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	send := gomail.SendFunc(func(from string, to []string, body io.WriterTo) error {
		var err error
		reply, err = s.transact(ctx, from, to, body)
		return err
	})
	if err := gomail.Send(send, msg); err != nil {
		// mail.SendError has no Unwrap; take the cause out so errors.As
		// (and IsPermanent) see the SMTP reply.
		var se *gomail.SendError
		if errors.As(err, &se) {
			err = se.Cause
		}
		// Say plainly that the send gave up in time, whichever of the
		// connection deadline and the context noticed first.
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		} else if ctxErr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w (%w)", err, context.DeadlineExceeded)
		}
		return "", fmt.Errorf("send email via %s:%d: %w", s.cfg.Host, s.cfg.Port, err)
	}
	return reply, nil
}

// build turns m into a go-mail message, checking what can be checked
// before connecting.
func (s *Sender) build(m Message) (*gomail.Message, error) {
	from, err := mail.ParseAddress(strings.TrimSpace(m.From))
	if err != nil {
		return nil, fmt.Errorf("%w: from address %q: %v", ErrInvalidMessage, m.From, err)
	}
	if len(m.To) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrInvalidMessage)
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		return nil, fmt.Errorf("%w: line break in subject", ErrInvalidMessage)
	}
	msg := gomail.NewMessage()
	msg.SetAddressHeader("From", from.Address, from.Name)
	to := make([]string, 0, len(m.To))
	for _, raw := range m.To {
		a, err := mail.ParseAddress(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: recipient %q: %v", ErrInvalidMessage, raw, err)
		}
		to = append(to, msg.FormatAddress(a.Address, a.Name))
	}
	msg.SetHeader("To", to...)
	msg.SetHeader("Subject", m.Subject)
	// RFC 3834: tells vacation responders and ticket systems not to
	// answer, so an alert never starts a mail loop.
	msg.SetHeader("Auto-Submitted", "auto-generated")

	_, domain, _ := strings.Cut(from.Address, "@")
	if domain == "" {
		domain = "callplane.invalid"
	}
	if m.ID != "" {
		if strings.ContainsAny(m.ID, "\r\n") {
			return nil, fmt.Errorf("%w: line break in alert id", ErrInvalidMessage)
		}
		msg.SetHeader(HeaderAlertID, m.ID)
		msg.SetHeader("Message-ID", "<callplane-alert."+msgIDPart(m.ID)+"@"+domain+">")
	} else {
		var b [12]byte
		_, _ = rand.Read(b[:])
		msg.SetHeader("Message-ID", "<"+strconv.FormatInt(time.Now().UnixNano(), 36)+"."+hex.EncodeToString(b[:])+"@"+domain+">")
	}

	for k, v := range m.Headers {
		name := textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
		if name == "Message-Id" {
			name = "Message-ID"
		}
		if !validHeaderName(name) || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("%w: header %q", ErrInvalidMessage, k)
		}
		switch name {
		case "From", "Sender", "To", "Cc", "Bcc", "Subject", "Mime-Version", "Content-Type", "Content-Transfer-Encoding":
			return nil, fmt.Errorf("%w: header %q is set from the message fields", ErrInvalidMessage, k)
		}
		msg.SetHeader(name, v)
	}

	msg.SetBody("text/plain", m.Text)
	if m.HTML != "" {
		msg.AddAlternative("text/html", m.HTML)
	}
	return msg, nil
}

// transact runs one SMTP conversation: connect, greet, secure,
// authenticate, MAIL, RCPT, DATA. It returns the server's reply to DATA.
func (s *Sender) transact(ctx context.Context, from string, to []string, body io.WriterTo) (string, error) {
	addr := net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	// The deadline covers everything, the greeting included; cancelling
	// ctx unblocks whatever read or write is in progress.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	secure := false
	if s.cfg.TLS == TLSImplicit {
		tc := tls.Client(conn, s.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return "", fmt.Errorf("tls handshake: %w", err)
		}
		conn, secure = tc, true
	}
	c, err := smtp.NewClient(conn, s.cfg.Host)
	if err != nil {
		return "", fmt.Errorf("greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(s.helo); err != nil {
		return "", fmt.Errorf("hello: %w", err)
	}
	if s.cfg.TLS == TLSStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return "", errors.New("server does not offer STARTTLS; add ?tls=none to the SMTP URL to send in the clear (local mail sinks only)")
		}
		if err := c.StartTLS(s.tlsConfig); err != nil {
			return "", fmt.Errorf("starttls: %w", err)
		}
		secure = true
	}
	if s.cfg.Username != "" {
		if err := s.auth(c, secure); err != nil {
			return "", err
		}
	}
	if err := c.Mail(from); err != nil {
		return "", fmt.Errorf("mail from %s: %w", from, err)
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt); err != nil {
			return "", fmt.Errorf("rcpt to %s: %w", rcpt, err)
		}
	}
	// DATA by hand rather than c.Data(): net/smtp throws the final reply
	// away, and it is what the caller wants to show.
	id, err := c.Text.Cmd("DATA")
	if err != nil {
		return "", fmt.Errorf("data: %w", err)
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(354)
	c.Text.EndResponse(id)
	if err != nil {
		return "", fmt.Errorf("data: %w", err)
	}
	w := c.Text.DotWriter()
	if _, err := body.WriteTo(w); err != nil {
		w.Close()
		return "", fmt.Errorf("data: write message: %w", err)
	}
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("data: write message: %w", err)
	}
	code, text, err := c.Text.ReadResponse(2)
	if err != nil {
		return "", fmt.Errorf("data: %w", err)
	}
	_ = c.Quit()
	return strconv.Itoa(code) + " " + text, nil
}

// auth logs in with the first mechanism the server offers among PLAIN,
// LOGIN and CRAM-MD5. A password is only sent over TLS or to loopback.
func (s *Sender) auth(c *smtp.Client, secure bool) error {
	if !secure && !isLoopback(s.cfg.Host) {
		return errors.New("refusing to send the SMTP password over an unencrypted connection; use STARTTLS or smtps://")
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return errors.New("server does not offer AUTH but the SMTP URL has a user name")
	}
	offered := strings.Fields(strings.ToUpper(mechs))
	var a smtp.Auth
	switch {
	case slices.Contains(offered, "PLAIN"):
		a = plainAuth{user: s.cfg.Username, pass: s.cfg.Password}
	case slices.Contains(offered, "LOGIN"):
		a = loginAuth{user: s.cfg.Username, pass: s.cfg.Password}
	case slices.Contains(offered, "CRAM-MD5"):
		a = smtp.CRAMMD5Auth(s.cfg.Username, s.cfg.Password)
	default:
		return fmt.Errorf("no supported AUTH mechanism among %q", mechs)
	}
	if err := c.Auth(a); err != nil {
		return fmt.Errorf("auth as %s: %w", s.cfg.Username, err)
	}
	return nil
}

// plainAuth is SASL PLAIN. net/smtp's PlainAuth would do, but it only
// accepts "localhost" and IP literals as loopback names; the check is made
// in Sender.auth instead, for every mechanism alike.
type plainAuth struct{ user, pass string }

func (a plainAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	return "PLAIN", []byte("\x00" + a.user + "\x00" + a.pass), nil
}

func (a plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge")
	}
	return nil, nil
}

// loginAuth is the LOGIN mechanism, which some servers (Microsoft 365 among
// them) offer instead of PLAIN.
type loginAuth struct{ user, pass string }

func (a loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	return "LOGIN", nil, nil
}

func (a loginAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(fromServer))) {
	case "username:", "user name", "username":
		return []byte(a.user), nil
	case "password:", "password":
		return []byte(a.pass), nil
	default:
		return nil, fmt.Errorf("unexpected LOGIN challenge %q", fromServer)
	}
}

// IsPermanent reports whether err is a failure that retrying cannot fix:
// a 5xx SMTP reply (550 mailbox unavailable, 535 authentication failed,
// 554 transaction failed) or ErrInvalidMessage. The message should be
// marked failed and shown to an administrator.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrInvalidMessage) {
		return true
	}
	if code, ok := replyCode(err); ok {
		return code >= 500 && code <= 599
	}
	return false
}

// replyCode finds the SMTP reply code in err's chain, looking through
// mail.SendError, which does not implement Unwrap.
func replyCode(err error) (int, bool) {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code, true
	}
	var se *gomail.SendError
	if errors.As(err, &se) && se.Cause != nil {
		return replyCode(se.Cause)
	}
	return 0, false
}

// msgIDPart keeps the characters allowed in the left half of a Message-ID
// (RFC 5322 dot-atom-text, conservatively) and replaces the others.
func msgIDPart(id string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '-', r == '_', r == '+', r == '=':
			return r
		}
		return '-'
	}, id)
}

// validHeaderName reports whether name is a header field name (RFC 5322:
// printable ASCII except the colon).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; b <= ' ' || b >= 0x7f || b == ':' {
			return false
		}
	}
	return true
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
