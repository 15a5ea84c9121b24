package alert

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

func TestParseSMTPURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		want    SMTP
		wantErr string
	}{
		{raw: "smtp://mail.example.com", want: SMTP{Host: "mail.example.com", Port: 587, TLS: TLSStartTLS}},
		{raw: "smtp://user:s3cret@mail.example.com:2525", want: SMTP{Host: "mail.example.com", Port: 2525, Username: "user", Password: "s3cret", TLS: TLSStartTLS}},
		{raw: "smtp://127.0.0.1:1025?tls=none", want: SMTP{Host: "127.0.0.1", Port: 1025, TLS: TLSNone}},
		{raw: "smtp://h:2465?tls=tls", want: SMTP{Host: "h", Port: 2465, TLS: TLSImplicit}},
		{raw: "SMTPS://u%40x.org:p%3Aw%2Fd@smtp.example.org", want: SMTP{Host: "smtp.example.org", Port: 465, Username: "u@x.org", Password: "p:w/d", TLS: TLSImplicit}},
		{raw: "smtps://[::1]:4650", want: SMTP{Host: "::1", Port: 4650, TLS: TLSImplicit}},
		{raw: " smtp://h/ ", want: SMTP{Host: "h", Port: 587, TLS: TLSStartTLS}},
		{raw: "", wantErr: "smtp url: empty"},
		{raw: "http://h", wantErr: `smtp url: unsupported scheme "http"`},
		{raw: "mail.example.com:25", wantErr: "smtp url: unsupported scheme"},
		{raw: "smtp.example.com", wantErr: "smtp url: missing scheme"},
		{raw: "smtp://", wantErr: "smtp url: missing host"},
		{raw: "smtp://user:hunter2@:25", wantErr: "smtp url: missing host"},
		{raw: "smtp://h:0", wantErr: `smtp url: bad port "0"`},
		{raw: "smtp://h:70000", wantErr: `smtp url: bad port "70000"`},
		{raw: "smtp://h:", wantErr: "smtp url: bad port"},
		{raw: "smtp://user:hunter2@h:abc", wantErr: "smtp url: "},
		{raw: "smtp://user:hunter2@h?tls=maybe", wantErr: `smtp url: unsupported tls="maybe"`},
		{raw: "smtps://h?tls=none", wantErr: "smtp url: smtps:// always uses TLS"},
		{raw: "smtp://h?foo=1", wantErr: `smtp url: unknown parameter "foo"`},
		{raw: "smtp://h/path", wantErr: "smtp url: unexpected path"},
		{raw: "smtp://:hunter2@h", wantErr: "smtp url: password without a user name"},
		{raw: "smtp://user:hunter2 x@h", wantErr: "smtp url: "},
		{raw: "smtp:h", wantErr: `smtp url: missing "//"`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := ParseSMTPURL(tt.raw)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseSMTPURL(%q) = %+v, want error %q", tt.raw, got, tt.wantErr)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, tt.wantErr) {
					t.Errorf("error = %q, want prefix %q", msg, tt.wantErr)
				}
				if strings.Contains(msg, "hunter2") || strings.Contains(msg, "\n") {
					t.Errorf("error %q leaks the password or is not one line", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSMTPURL(%q): %v", tt.raw, err)
			}
			if got != tt.want {
				t.Fatalf("ParseSMTPURL(%q) = %#v, want %#v", tt.raw, got, tt.want)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	tests := []struct{ raw, want string }{
		{"smtp://user:hunter2@mail.example.com", "smtp://user:xxxxx@mail.example.com:587"},
		{"smtp://user@mail.example.com:25", "smtp://user@mail.example.com:25"},
		{"smtp://127.0.0.1:1025?tls=none", "smtp://127.0.0.1:1025?tls=none"},
		{"smtps://a%40b.c:hunter2@h", "smtps://a%40b.c:xxxxx@h:465"},
		{"smtp://h:2465?tls=tls", "smtps://h:2465"},
		{"smtps://[::1]", "smtps://[::1]:465"},
	}
	for _, tt := range tests {
		cfg, err := ParseSMTPURL(tt.raw)
		if err != nil {
			t.Fatalf("ParseSMTPURL(%q): %v", tt.raw, err)
		}
		got := cfg.Redacted()
		if got != tt.want {
			t.Errorf("Redacted(%q) = %q, want %q", tt.raw, got, tt.want)
		}
		// The redacted URL parses back to the same settings.
		back, err := ParseSMTPURL(got)
		if err != nil {
			t.Fatalf("ParseSMTPURL(Redacted) %q: %v", got, err)
		}
		if cfg.Password != "" {
			back.Password = cfg.Password
		}
		if back != cfg {
			t.Errorf("round trip of %q = %#v, want %#v", tt.raw, back, cfg)
		}
		// Printing the struct by accident does not leak the password.
		var sb strings.Builder
		fmt.Fprintf(&sb, "%v %+v %#v %s", cfg, cfg, cfg, cfg)
		slog.New(slog.NewJSONHandler(&sb, nil)).Info("x", "smtp", cfg)
		slog.New(slog.NewTextHandler(&sb, nil)).Info("x", "smtp", cfg)
		if strings.Contains(sb.String(), "hunter2") {
			t.Errorf("printed config leaks the password: %s", sb.String())
		}
	}
}

func TestParseRecipients(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "ops@example.com", want: []string{"ops@example.com"}},
		{in: " a@x.org , Ops Team <b@y.org>,, a@x.org, A@X.ORG,", want: []string{"a@x.org", "b@y.org"}},
		{in: "root@localhost", want: []string{"root@localhost"}},
		{in: "", wantErr: "recipients: no address given"},
		{in: " , ,", wantErr: "recipients: no address given"},
		{in: "a@x.org, not-an-address", wantErr: `recipients: invalid address "not-an-address"`},
		{in: "a@x.org, b@", wantErr: `recipients: invalid address "b@"`},
	}
	for _, tt := range tests {
		got, err := ParseRecipients(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("ParseRecipients(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseRecipients(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
