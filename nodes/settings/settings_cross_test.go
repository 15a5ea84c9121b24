package settings

import (
	"testing"
)

// Settings are validated against each other: a stale time under three
// heartbeat intervals (heartbeat_stale=400ms failed 6 of 7 healthy nodes
// over) and a probe timeout not under the probe interval are refused,
// each naming its field.
func TestParseCrossFieldRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key, value string
		ok         bool
	}{
		{KeyHeartbeatStale, "400ms", false},
		{KeyHeartbeatStale, "2999ms", false},
		{KeyHeartbeatStale, "3s", true},
		{KeyHeartbeatStale, "10s", true},
	} {
		v := validValues()
		v[tc.key] = tc.value
		_, fe := Parse(v)
		if _, bad := fe[tc.key]; bad == tc.ok {
			t.Errorf("%s=%s: errors %v, want ok=%v", tc.key, tc.value, fe, tc.ok)
		}
	}
	v := validValues()
	v[KeyProbeInterval], v[KeyProbeTimeout] = "500ms", "500ms"
	if _, fe := Parse(v); fe[KeyProbeTimeout] == "" {
		t.Errorf("probe timeout equal to the interval accepted: %v", fe)
	}
}
