package sipfront

import (
	"fmt"
	"strconv"
	"time"
)

// Setting keys, stored in the settings table like every portal setting.
const (
	KeyTries       = "sip_tries"
	KeyTryTimeout  = "sip_try_timeout"
	KeyMaxDuration = "sip_max_call_duration"
)

// Settings tune the front door; they are read from the database and
// refreshed while it runs, so a change in the portal reaches every
// instance.
type Settings struct {
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

// DefaultSettings are the built-in values.
func DefaultSettings() Settings {
	return Settings{Tries: 3, TryTimeout: 2 * time.Second, MaxDuration: 4 * time.Hour}
}

// ParseSettings reads stored values over the defaults. Errors are keyed
// by setting name, for the portal form.
func ParseSettings(v map[string]string) (Settings, map[string]string) {
	s := DefaultSettings()
	errs := map[string]string{}
	if raw, ok := v[KeyTries]; ok && raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 10 {
			errs[KeyTries] = "sip_tries must be a whole number from 1 to 10"
		} else {
			s.Tries = n
		}
	}
	if raw, ok := v[KeyTryTimeout]; ok && raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < 100*time.Millisecond || d > 32*time.Second {
			errs[KeyTryTimeout] = "sip_try_timeout must be a duration from 100ms to 32s, e.g. 2s"
		} else {
			s.TryTimeout = d
		}
	}
	if raw, ok := v[KeyMaxDuration]; ok && raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil || d < time.Minute || d > 7*24*time.Hour {
			errs[KeyMaxDuration] = "sip_max_call_duration must be a duration from 1m to 168h, e.g. 4h"
		} else {
			s.MaxDuration = d
		}
	}
	return s, errs
}

// Values returns the settings as stored strings.
func (s Settings) Values() map[string]string {
	return map[string]string{
		KeyTries:       strconv.Itoa(s.Tries),
		KeyTryTimeout:  s.TryTimeout.String(),
		KeyMaxDuration: s.MaxDuration.String(),
	}
}

func (s Settings) String() string {
	return fmt.Sprintf("tries=%d try_timeout=%s max_duration=%s", s.Tries, s.TryTimeout, s.MaxDuration)
}
