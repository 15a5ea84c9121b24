package health

import (
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/settings"
)

func TestAlertReminderSetting(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		raw  string
		want time.Duration
		bad  bool
	}{
		{"", 0, false}, {"0", 0, false}, {"0s", 0, false}, {"off", 0, false},
		{"30m", 30 * time.Minute, false}, {"2h", 2 * time.Hour, false},
		{"10s", 0, true}, {"8d", 0, true}, {"soon", 0, true},
	} {
		v := settings.Builtin().Values()
		if v[settings.KeyAlertReminder] != "0s" {
			t.Fatalf("default reminder %q, want off", v[settings.KeyAlertReminder])
		}
		v[settings.KeyAlertReminder] = c.raw
		st, fe := settings.Parse(v)
		if _, bad := fe[settings.KeyAlertReminder]; bad != c.bad || (!c.bad && st.AlertReminder != c.want) {
			t.Errorf("%q: %v %v", c.raw, st.AlertReminder, fe)
		}
	}
}
