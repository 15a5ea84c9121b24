package alert

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
)

// TLS modes of an SMTP connection.
const (
	// TLSNone sends in the clear and never tries STARTTLS. Meant for a mail
	// sink on the same machine (smtp://127.0.0.1:1025?tls=none).
	TLSNone = "none"
	// TLSStartTLS connects in the clear and requires the STARTTLS upgrade
	// before anything else is sent. A server that does not offer STARTTLS
	// is refused rather than used in the clear, so a man in the middle
	// cannot strip the upgrade and read the password or the alerts.
	TLSStartTLS = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS, port 465).
	TLSImplicit = "tls"
)

// Default ports: submission with STARTTLS, and SMTPS.
const (
	DefaultPort    = 587
	DefaultTLSPort = 465
)

// redactedPassword stands in for the password in Redacted.
const redactedPassword = "xxxxx"

// SMTP is where alert emails are submitted. Build it with ParseSMTPURL.
// Printing it (fmt, log/slog) shows the redacted URL, never the password.
type SMTP struct {
	Host     string
	Port     int
	Username string
	Password string
	// TLS is one of TLSNone, TLSStartTLS or TLSImplicit.
	TLS string
}

// ParseSMTPURL parses the --smtp-url setting.
//
// Accepted forms:
//
//	smtp://[user:pass@]host[:port][?tls=starttls|none|tls]
//	smtps://[user:pass@]host[:port]
//
// smtp:// defaults to port 587 and mandatory STARTTLS (TLSStartTLS): the
// send fails with a clear error when the server does not offer it, instead
// of silently falling back to the clear. ?tls=none disables TLS for a local
// mail sink; ?tls=tls asks for implicit TLS on an explicit port. smtps://
// means implicit TLS and defaults to port 465. User and password are
// percent-decoded. Errors are one line, start with "smtp url:" and never
// contain the password.
func ParseSMTPURL(raw string) (SMTP, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return SMTP{}, errors.New("smtp url: empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL, password included: keep only
		// the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return SMTP{}, fmt.Errorf("smtp url: %v", err)
	}
	var cfg SMTP
	switch strings.ToLower(u.Scheme) {
	case "smtp":
		cfg.TLS = TLSStartTLS
	case "smtps":
		cfg.TLS = TLSImplicit
	case "":
		return SMTP{}, errors.New(`smtp url: missing scheme, want smtp:// or smtps://`)
	default:
		return SMTP{}, fmt.Errorf("smtp url: unsupported scheme %q, want smtp or smtps", u.Scheme)
	}
	if u.Opaque != "" {
		return SMTP{}, errors.New(`smtp url: missing "//" after the scheme`)
	}
	if u.Path != "" && u.Path != "/" {
		return SMTP{}, errors.New("smtp url: unexpected path")
	}
	if u.Fragment != "" {
		return SMTP{}, errors.New("smtp url: unexpected fragment")
	}
	cfg.Host = u.Hostname()
	if cfg.Host == "" {
		return SMTP{}, errors.New("smtp url: missing host")
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
		if cfg.Username == "" && cfg.Password != "" {
			return SMTP{}, errors.New("smtp url: password without a user name")
		}
	}
	for key, vals := range u.Query() {
		switch key {
		case "tls":
			if len(vals) != 1 {
				return SMTP{}, errors.New("smtp url: tls given more than once")
			}
			mode := strings.ToLower(vals[0])
			switch mode {
			case TLSNone, TLSStartTLS, TLSImplicit:
			default:
				return SMTP{}, fmt.Errorf("smtp url: unsupported tls=%q, want none, starttls or tls", vals[0])
			}
			if cfg.TLS == TLSImplicit && mode != TLSImplicit {
				return SMTP{}, fmt.Errorf("smtp url: smtps:// always uses TLS, tls=%s contradicts it", mode)
			}
			cfg.TLS = mode
		default:
			return SMTP{}, fmt.Errorf("smtp url: unknown parameter %q", key)
		}
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return SMTP{}, fmt.Errorf("smtp url: bad port %q", p)
		}
		cfg.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return SMTP{}, errors.New(`smtp url: bad port ""`)
	} else if cfg.TLS == TLSImplicit {
		cfg.Port = DefaultTLSPort
	} else {
		cfg.Port = DefaultPort
	}
	return cfg, nil
}

// Redacted returns the configuration as a URL with the password replaced by
// "xxxxx", fit for logs and the settings page. It parses back to the same
// settings, except for the password.
func (s SMTP) Redacted() string {
	u := url.URL{Scheme: "smtp", Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port))}
	switch s.TLS {
	case TLSImplicit:
		u.Scheme = "smtps"
	case TLSStartTLS, "":
	default:
		u.RawQuery = "tls=" + url.QueryEscape(s.TLS)
	}
	switch {
	case s.Username != "" && s.Password != "":
		u.User = url.UserPassword(s.Username, redactedPassword)
	case s.Username != "":
		u.User = url.User(s.Username)
	}
	return u.String()
}

// String returns Redacted, so a configuration printed by accident does not
// leak its password.
func (s SMTP) String() string { return s.Redacted() }

// GoString returns Redacted for %#v, for the same reason as String.
func (s SMTP) GoString() string { return "alert.SMTP(" + strconv.Quote(s.Redacted()) + ")" }

// LogValue makes log/slog (including its JSON handler) log the redacted URL.
func (s SMTP) LogValue() slog.Value { return slog.StringValue(s.Redacted()) }

// ParseRecipients parses a comma-separated list of email addresses, as in
// --alert-to. Each item is checked with net/mail and may carry a display
// name ("Ops <ops@example.com>"); only the bare addresses are returned, in
// order, without duplicates (compared case-insensitively). Empty items, as
// left by a trailing comma, are skipped, but at least one address is
// required. Display names that contain a comma are not supported.
func ParseRecipients(s string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		addr, err := mail.ParseAddress(item)
		if err != nil {
			return nil, fmt.Errorf("recipients: invalid address %q: %v", item, strings.TrimPrefix(err.Error(), "mail: "))
		}
		key := strings.ToLower(addr.Address)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, addr.Address)
	}
	if len(out) == 0 {
		return nil, errors.New("recipients: no address given")
	}
	return out, nil
}
