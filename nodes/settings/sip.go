package settings

import (
	"fmt"
	"strconv"
	"time"

	"github.com/callplane/callplane/nodes/problem"
)

// The SIP front door's setting keys, stored in the settings table like
// every portal setting.
const (
	KeySIPTries       = "sip_tries"
	KeySIPTryTimeout  = "sip_try_timeout"
	KeySIPMaxDuration = "sip_max_call_duration"
)

// SIPKeys lists the SIP front door's setting keys in form order.
func SIPKeys() []string { return []string{KeySIPTries, KeySIPTryTimeout, KeySIPMaxDuration} }

// SIP tunes the SIP front door; it is read from the database and
// refreshed while the front door runs, so a change in the portal reaches
// every instance.
type SIP struct {
	// Tries is how many media nodes an initial INVITE is offered to
	// before the caller gets 503 (Kamailio: the dispatcher's destination
	// list walked with ds_next_dst).
	Tries int
	// TryTimeout is how long a node may stay silent (no provisional
	// response) before the call goes to the next node (Kamailio's
	// fr_timer in a dispatcher failure route).
	TryTimeout time.Duration
	// MaxDuration ends calls that never saw a BYE.
	MaxDuration time.Duration
}

// DefaultSIP returns the built-in SIP settings.
func DefaultSIP() SIP {
	return SIP{Tries: 3, TryTimeout: 2 * time.Second, MaxDuration: 4 * time.Hour}
}

// ParseSIP reads stored or submitted values over the defaults (an absent
// or empty key keeps its default). A bad value keeps its default too and
// is named in the FieldErrors, for the portal form and the log.
func ParseSIP(v map[string]string) (SIP, problem.FieldErrors) {
	s := DefaultSIP()
	fe := problem.FieldErrors{}
	if raw := v[KeySIPTries]; raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 10 {
			fe.Add(KeySIPTries, "sip_tries must be a whole number from 1 to 10")
		} else {
			s.Tries = n
		}
	}
	if raw := v[KeySIPTryTimeout]; raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < 100*time.Millisecond || d > 32*time.Second {
			fe.Add(KeySIPTryTimeout, "sip_try_timeout must be a duration from 100ms to 32s, e.g. 2s")
		} else {
			s.TryTimeout = d
		}
	}
	if raw := v[KeySIPMaxDuration]; raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < time.Minute || d > 7*24*time.Hour {
			fe.Add(KeySIPMaxDuration, "sip_max_call_duration must be a duration from 1m to 168h, e.g. 4h")
		} else {
			s.MaxDuration = d
		}
	}
	return s, fe
}

// Values returns the settings as stored strings.
func (s SIP) Values() map[string]string {
	return map[string]string{
		KeySIPTries:       strconv.Itoa(s.Tries),
		KeySIPTryTimeout:  s.TryTimeout.String(),
		KeySIPMaxDuration: s.MaxDuration.String(),
	}
}

func (s SIP) String() string {
	return fmt.Sprintf("tries=%d try_timeout=%s max_duration=%s", s.Tries, s.TryTimeout, s.MaxDuration)
}
