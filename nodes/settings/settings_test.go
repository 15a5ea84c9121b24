package settings

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func validValues() map[string]string {
	v := Builtin().Values()
	v[KeySMTPURL] = "smtp://alerts:s3cret@mail.example.com:587"
	v[KeyAlertFrom] = "Callplane <alerts@example.com>"
	v[KeyAlertTo] = "ops@example.com, oncall@example.com"
	return v
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	s, fe := Parse(validValues())
	if len(fe) > 0 {
		t.Fatalf("valid settings refused: %v", fe)
	}
	if s.ProbeInterval != 750*time.Millisecond || s.ProbeTimeout != 500*time.Millisecond || s.FailThreshold != 3 || s.RecoverThreshold != 2 {
		t.Errorf("timing = %+v", s)
	}
	if s.HeartbeatStale != 3*time.Second || s.FlapLimit != 6 || s.FlapWindow != 10*time.Minute {
		t.Errorf("heartbeat/flap = %s %d %s", s.HeartbeatStale, s.FlapLimit, s.FlapWindow)
	}
	if s.PolicyFor("media") != PolicyAuto || s.PolicyFor("ivr") != PolicyManual || s.PolicyFor("im") != PolicyManual {
		t.Errorf("policies = %v", s.Policy)
	}
	if !s.MailReady() || len(s.Recipients()) != 2 {
		t.Errorf("mail not ready: %v", s.Recipients())
	}
	if got := s.SMTPRedacted(); strings.Contains(got, "s3cret") {
		t.Errorf("redacted URL leaks the password: %s", got)
	}
	// Round trip.
	again, fe := Parse(s.Values())
	if len(fe) > 0 || again.SMTPURL != s.SMTPURL || again.ProbeTimeout != s.ProbeTimeout {
		t.Errorf("round trip: %v %+v", fe, again)
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		set   map[string]string
		field string
	}{
		{"bad smtp url", map[string]string{KeySMTPURL: "http://mail.example.com"}, KeySMTPURL},
		{"smtp url garbage", map[string]string{KeySMTPURL: "not a url at all"}, KeySMTPURL},
		{"empty recipients with smtp", map[string]string{KeyAlertTo: ""}, KeyAlertTo},
		{"invalid recipient", map[string]string{KeyAlertTo: "ops@example.com, nope"}, KeyAlertTo},
		{"missing sender with smtp", map[string]string{KeyAlertFrom: ""}, KeyAlertFrom},
		{"bad sender", map[string]string{KeyAlertFrom: "alerts at example"}, KeyAlertFrom},
		{"fail threshold 0", map[string]string{KeyFailThreshold: "0"}, KeyFailThreshold},
		{"recover threshold 0", map[string]string{KeyRecoverThreshold: "0"}, KeyRecoverThreshold},
		{"threshold not a number", map[string]string{KeyFailThreshold: "three"}, KeyFailThreshold},
		{"timeout equals interval", map[string]string{KeyProbeTimeout: "1s"}, KeyProbeTimeout},
		{"timeout above interval", map[string]string{KeyProbeInterval: "500ms", KeyProbeTimeout: "800ms"}, KeyProbeTimeout},
		{"interval not a duration", map[string]string{KeyProbeInterval: "soon"}, KeyProbeInterval},
		{"interval too short", map[string]string{KeyProbeInterval: "1ms"}, KeyProbeInterval},
		{"sip code out of range", map[string]string{KeySIPOKCodes: "200,999"}, KeySIPOKCodes},
		{"unknown policy", map[string]string{PolicyKey("media"): "sometimes"}, PolicyKey("media")},
		{"flap limit too low", map[string]string{KeyFlapLimit: "1"}, KeyFlapLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := validValues()
			maps.Copy(v, tt.set)
			_, fe := Parse(v)
			if fe[tt.field] == "" {
				t.Fatalf("no error on %s; errors %v", tt.field, fe)
			}
			if strings.Contains(fe.Error(), "s3cret") {
				t.Errorf("error leaks the password: %v", fe)
			}
		})
	}
}

func TestParseNoSMTPNeedsNoRecipients(t *testing.T) {
	t.Parallel()
	s, fe := Parse(Builtin().Values())
	if len(fe) > 0 {
		t.Fatalf("built-in settings refused: %v", fe)
	}
	if s.MailReady() {
		t.Fatal("mail ready without an SMTP server")
	}
}

func TestParseSIPOKCodes(t *testing.T) {
	t.Parallel()
	s, fe := Parse(maps.Collect(func(yield func(string, string) bool) {
		for k, v := range validValues() {
			if k == KeySIPOKCodes {
				v = " 200, 202 ,200"
			}
			if !yield(k, v) {
				return
			}
		}
	}))
	if len(fe) > 0 || len(s.SIPOKCodes) != 2 || s.SIPOKCodes[0] != 200 || s.SIPOKCodes[1] != 202 {
		t.Fatalf("codes = %v (%v)", s.SIPOKCodes, fe)
	}
}
