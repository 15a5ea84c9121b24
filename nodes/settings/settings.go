package settings

import (
	"fmt"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/alert"
	"github.com/callplane/callplane/nodes/problem"
)

// Failover policies.
const (
	PolicyAuto   = "auto"
	PolicyManual = "manual"
)

// Policies lists the failover policies.
var Policies = []string{PolicyAuto, PolicyManual}

// Setting keys, as stored in the settings table and named in the form.
const (
	KeyProbeInterval    = "probe_interval"
	KeyProbeTimeout     = "probe_timeout"
	KeyFailThreshold    = "fail_threshold"
	KeyRecoverThreshold = "recover_threshold"
	KeyHeartbeatStale   = "heartbeat_stale"
	KeySIPOKCodes       = "sip_ok_codes"
	KeyFlapLimit        = "flap_limit"
	KeyFlapWindow       = "flap_window"
	KeyDisruptionShare  = "disruption_share"
	KeyAgentLostGrace   = "agent_lost_grace"
	KeySMTPURL          = "smtp_url"
	KeyAlertFrom        = "alert_from"
	KeyAlertTo          = "alert_to"
	KeyAlertReminder    = "alert_reminder"
	keyPolicyPrefix     = "policy_"
)

// PolicyKey is the setting key of a node kind's failover policy.
func PolicyKey(kind string) string { return keyPolicyPrefix + kind }

// Keys lists every setting key in form order.
func Keys() []string {
	keys := []string{KeyProbeInterval, KeyProbeTimeout, KeyFailThreshold, KeyRecoverThreshold,
		KeyHeartbeatStale, KeySIPOKCodes, KeyFlapLimit, KeyFlapWindow, KeyDisruptionShare, KeyAgentLostGrace}
	for _, k := range nodes.Kinds {
		keys = append(keys, PolicyKey(k))
	}
	return append(keys, KeySMTPURL, KeyAlertFrom, KeyAlertTo, KeyAlertReminder)
}

// Settings are the health checker's and the alert mailer's settings.
type Settings struct {
	// ProbeInterval is how often every node is probed.
	ProbeInterval time.Duration
	// ProbeTimeout bounds each probe; it is shorter than the interval.
	ProbeTimeout time.Duration
	// FailThreshold is N: a node is down after N consecutive failures
	// (suspect from the first).
	FailThreshold int
	// RecoverThreshold is M: a down (or pending) node is up after M
	// consecutive successes.
	RecoverThreshold int
	// HeartbeatStale: an agent whose last heartbeat is older is silent. A
	// silent agent keeps a pending node from coming up and flags an up
	// node "agent lost"; it never fails a node whose probe passes.
	// Staleness counts only once this instance has led, with the database
	// reachable, for HeartbeatStale.
	HeartbeatStale time.Duration
	// SIPOKCodes are the SIP answers that count as healthy; empty means
	// any 2xx.
	SIPOKCodes []int
	// FlapLimit is how many up<->down transitions a node may make within
	// FlapWindow; at the limit the node is held down for FlapWindow.
	FlapLimit  int
	FlapWindow time.Duration
	// DisruptionShare is the percentage of watched nodes that must fail in
	// one round (at least MinDisruptionNodes of them) for the checker to
	// call it a disruption: one alert, no automatic failover until it
	// clears or an administrator confirms. 100 turns the guard off.
	DisruptionShare int
	// AgentLostGrace is how long a node stays agent lost before it is
	// mailed (grouped).
	AgentLostGrace time.Duration
	// Policy is the failover policy per node kind: auto or manual.
	Policy map[string]string
	// SMTPURL (may hold a password: never log it; see SMTPRedacted),
	// AlertFrom and AlertTo (comma-separated) configure alert emails.
	SMTPURL   string
	AlertFrom string
	AlertTo   string
	// AlertReminder repeats the down alert of a node that stays down,
	// until an administrator acknowledges it or it recovers; 0 is off.
	AlertReminder time.Duration
}

// Optional reports whether a form may leave setting key out, keeping its
// saved value: the settings added after the first release, which older
// scripts and forms do not send.
func Optional(key string) bool {
	return key == KeyDisruptionShare || key == KeyAgentLostGrace
}

// StallAfter is how long the health checker may go without completing a
// round before its leader steps down and the portal warns that nothing
// watches the nodes: ten probe intervals, and never under 30 s, so a
// slow round over many nodes or a short database outage is no stall.
func (s Settings) StallAfter() time.Duration {
	return max(10*s.ProbeInterval, 30*time.Second)
}

// Defaults are the settings that come from the command line or the
// environment, before anything is saved in the portal.
type Defaults struct {
	SMTPURL, AlertFrom, AlertTo string
}

// Builtin returns the built-in settings: a dead node is detected within
// 2-2.75 s (three failures 750 ms apart, each probe under 500 ms), inside
// the 3 s operators expect; a healthy SIP or TCP peer answers in well under
// 500 ms even on a loaded LAN (the benchmark injects 200 ms of jitter and
// sees no false failover).
func Builtin() Settings {
	return Settings{
		ProbeInterval:    750 * time.Millisecond,
		ProbeTimeout:     500 * time.Millisecond,
		FailThreshold:    3,
		RecoverThreshold: 2,
		HeartbeatStale:   3 * agentproto.HeartbeatInterval, // three missed beats
		FlapLimit:        6,
		FlapWindow:       10 * time.Minute,
		DisruptionShare:  50,
		AgentLostGrace:   time.Minute,
		Policy: map[string]string{
			nodes.KindMedia: PolicyAuto, nodes.KindIVR: PolicyManual, nodes.KindQueue: PolicyManual,
			nodes.KindMeeting: PolicyManual, nodes.KindIM: PolicyManual,
		},
	}
}

// PolicyFor returns the failover policy of a node kind (manual when
// unknown, the safe choice).
func (s Settings) PolicyFor(kind string) string {
	if p := s.Policy[kind]; p != "" {
		return p
	}
	return PolicyManual
}

// SMTP returns the parsed SMTP configuration, and false when none is set
// (alerts then wait in the outbox).
func (s Settings) SMTP() (alert.SMTP, bool) {
	if strings.TrimSpace(s.SMTPURL) == "" {
		return alert.SMTP{}, false
	}
	cfg, err := alert.ParseSMTPURL(s.SMTPURL)
	return cfg, err == nil
}

// SMTPRedacted is the SMTP URL with its password hidden, for pages and logs.
func (s Settings) SMTPRedacted() string {
	if cfg, ok := s.SMTP(); ok {
		return cfg.Redacted()
	}
	return ""
}

// Recipients returns the parsed alert recipients (nil when none).
func (s Settings) Recipients() []string {
	to, err := alert.ParseRecipients(s.AlertTo)
	if err != nil {
		return nil
	}
	return to
}

// MailReady reports whether alert emails can be sent: an SMTP server, a
// sender and at least one recipient.
func (s Settings) MailReady() bool {
	_, ok := s.SMTP()
	return ok && s.AlertFrom != "" && len(s.Recipients()) > 0
}

// Values returns the settings as the strings stored and shown in the form.
// The SMTP URL is returned whole: callers that show it use SMTPRedacted.
func (s Settings) Values() map[string]string {
	codes := make([]string, len(s.SIPOKCodes))
	for i, c := range s.SIPOKCodes {
		codes[i] = strconv.Itoa(c)
	}
	v := map[string]string{
		KeyProbeInterval:    s.ProbeInterval.String(),
		KeyProbeTimeout:     s.ProbeTimeout.String(),
		KeyFailThreshold:    strconv.Itoa(s.FailThreshold),
		KeyRecoverThreshold: strconv.Itoa(s.RecoverThreshold),
		KeyHeartbeatStale:   s.HeartbeatStale.String(),
		KeySIPOKCodes:       strings.Join(codes, ","),
		KeyFlapLimit:        strconv.Itoa(s.FlapLimit),
		KeyFlapWindow:       s.FlapWindow.String(),
		KeyDisruptionShare:  strconv.Itoa(s.DisruptionShare),
		KeyAgentLostGrace:   s.AgentLostGrace.String(),
		KeySMTPURL:          s.SMTPURL,
		KeyAlertFrom:        s.AlertFrom,
		KeyAlertTo:          s.AlertTo,
		KeyAlertReminder:    s.AlertReminder.String(),
	}
	for _, k := range nodes.Kinds {
		v[PolicyKey(k)] = s.PolicyFor(k)
	}
	return v
}

// Parse reads settings from their string values (a form or the settings
// table) and validates them. Missing keys are errors. It returns what it
// could read and a message per bad field.
func Parse(v map[string]string) (Settings, problem.FieldErrors) {
	fe := problem.FieldErrors{}
	s := Settings{Policy: map[string]string{}}
	dur := func(key string, lo, hi time.Duration) time.Duration {
		raw := strings.TrimSpace(v[key])
		d, err := time.ParseDuration(raw)
		if err != nil {
			// A bare number is taken as milliseconds.
			if n, nerr := strconv.Atoi(raw); nerr == nil {
				d, err = time.Duration(n)*time.Millisecond, nil
			}
		}
		switch {
		case raw == "":
			fe.Add(key, "enter a duration, such as 1s or 800ms")
		case err != nil:
			fe.Add(key, fmt.Sprintf("%q is not a duration; use a value such as 1s or 800ms", raw))
		case d < lo || d > hi:
			fe.Add(key, fmt.Sprintf("must be between %s and %s", lo, hi))
		}
		return d
	}
	num := func(key string, lo, hi int) int {
		raw := strings.TrimSpace(v[key])
		n, err := strconv.Atoi(raw)
		switch {
		case err != nil:
			fe.Add(key, "enter a whole number")
		case n < lo || n > hi:
			fe.Add(key, fmt.Sprintf("must be between %d and %d", lo, hi))
		}
		return n
	}
	s.ProbeInterval = dur(KeyProbeInterval, 100*time.Millisecond, time.Hour)
	s.ProbeTimeout = dur(KeyProbeTimeout, 10*time.Millisecond, time.Hour)
	if _, bad := fe[KeyProbeTimeout]; !bad && s.ProbeTimeout >= s.ProbeInterval {
		fe.Add(KeyProbeTimeout, "the probe timeout must be shorter than the probe interval")
	}
	s.FailThreshold = num(KeyFailThreshold, 1, 100)
	s.RecoverThreshold = num(KeyRecoverThreshold, 1, 100)
	s.HeartbeatStale = dur(KeyHeartbeatStale, 100*time.Millisecond, time.Hour)
	// A stale time under three heartbeat intervals fails healthy nodes
	// over on one late beat.
	const minStaleBeats = 3
	if _, bad := fe[KeyHeartbeatStale]; !bad && s.HeartbeatStale < minStaleBeats*agentproto.HeartbeatInterval {
		fe.Add(KeyHeartbeatStale, fmt.Sprintf("must be at least %s: %d heartbeat intervals of %s", minStaleBeats*agentproto.HeartbeatInterval, minStaleBeats, agentproto.HeartbeatInterval))
	}
	for item := range strings.SplitSeq(v[KeySIPOKCodes], ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		c, err := strconv.Atoi(item)
		if err != nil || c < 100 || c > 699 {
			fe.Add(KeySIPOKCodes, fmt.Sprintf("%q is not a SIP status code (100-699); leave empty for any 2xx", item))
			continue
		}
		if !slices.Contains(s.SIPOKCodes, c) {
			s.SIPOKCodes = append(s.SIPOKCodes, c)
		}
	}
	s.FlapLimit = num(KeyFlapLimit, 2, 1000)
	s.FlapWindow = dur(KeyFlapWindow, time.Minute, 24*time.Hour)
	s.DisruptionShare = num(KeyDisruptionShare, 1, 100)
	s.AgentLostGrace = dur(KeyAgentLostGrace, 0, 24*time.Hour)
	for _, k := range nodes.Kinds {
		p := strings.TrimSpace(v[PolicyKey(k)])
		if !slices.Contains(Policies, p) {
			fe.Add(PolicyKey(k), "choose auto or manual")
		}
		s.Policy[k] = p
	}
	switch strings.TrimSpace(v[KeyAlertReminder]) {
	case "", "0", "0s", "off":
		// Reminders are off.
	default:
		s.AlertReminder = dur(KeyAlertReminder, time.Minute, 7*24*time.Hour)
	}
	s.SMTPURL = strings.TrimSpace(v[KeySMTPURL])
	s.AlertFrom = strings.TrimSpace(v[KeyAlertFrom])
	s.AlertTo = strings.TrimSpace(v[KeyAlertTo])
	if s.SMTPURL != "" {
		if _, err := alert.ParseSMTPURL(s.SMTPURL); err != nil {
			// ParseSMTPURL's errors never contain the password.
			fe.Add(KeySMTPURL, err.Error()+" (want smtp://[user:pass@]host[:port][?tls=none|starttls] or smtps://…)")
		}
	}
	if s.AlertFrom != "" {
		if _, err := mail.ParseAddress(s.AlertFrom); err != nil {
			fe.Add(KeyAlertFrom, fmt.Sprintf("%q is not an email address", s.AlertFrom))
		}
	} else if s.SMTPURL != "" {
		fe.Add(KeyAlertFrom, "enter the sender address of alert emails")
	}
	if s.AlertTo != "" || s.SMTPURL != "" {
		if _, err := alert.ParseRecipients(s.AlertTo); err != nil {
			msg := strings.TrimPrefix(err.Error(), "recipients: ")
			if s.AlertTo == "" {
				msg = "enter at least one recipient"
			}
			fe.Add(KeyAlertTo, msg)
		}
	}
	return s, fe
}
