package nodes

import (
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/problem"
)

func TestInForce(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return now.Add(time.Duration(h) * time.Hour) }
	for _, c := range []struct {
		name   string
		ws     []Window
		until  time.Time // zero: not in maintenance
		reason string
	}{
		{"none", nil, time.Time{}, ""},
		{"future only", []Window{{at(1), at(2), "later"}}, time.Time{}, ""},
		{"ended", []Window{{at(-2), at(-1), "past"}, {at(-1), now, "ends now"}}, time.Time{}, ""},
		{"inside", []Window{{at(-1), at(1), "upgrade"}}, at(1), "upgrade"},
		{"starts now", []Window{{now, at(1), "now"}}, at(1), "now"},
		{"overlapping: the latest end", []Window{{at(-2), at(1), "a"}, {at(-1), at(3), "b"}}, at(3), "b"},
		{"touching chain", []Window{{at(-1), at(1), "a"}, {at(1), at(2), "b"}, {at(2), at(4), "c"}}, at(4), "a"},
		{"gap stops the chain", []Window{{at(-1), at(1), "a"}, {at(2), at(3), "b"}}, at(1), "a"},
	} {
		until, reason := InForce(c.ws, now)
		switch {
		case c.until.IsZero() && until != nil:
			t.Errorf("%s: in maintenance until %v, want none", c.name, until)
		case !c.until.IsZero() && (until == nil || !until.Equal(c.until) || reason != c.reason):
			t.Errorf("%s: until %v %q, want %v %q", c.name, until, reason, c.until, c.reason)
		}
	}
}

func TestValidateMaintenance(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, c := range []struct {
		in    MaintenanceInput
		field string
	}{
		{MaintenanceInput{End: now.Add(time.Hour)}, "reason"},
		{MaintenanceInput{End: now.Add(time.Hour), Reason: "x", Start: now.Add(-time.Hour)}, "start"},
		{MaintenanceInput{Reason: "x"}, "end"},
		{MaintenanceInput{Start: now.Add(2 * time.Hour), End: now.Add(time.Hour), Reason: "x"}, "end"},
		{MaintenanceInput{End: now.Add(40 * 24 * time.Hour), Reason: "x"}, "end"},
		{MaintenanceInput{Start: now.Add(2 * 366 * 24 * time.Hour), End: now.Add(2*366*24*time.Hour + time.Hour), Reason: "x"}, "start"},
		{MaintenanceInput{End: now.Add(time.Hour), Reason: "ok"}, ""},
		{MaintenanceInput{Start: now.Add(24 * time.Hour), End: now.Add(25 * time.Hour), Reason: "later"}, ""},
	} {
		got, err := validateMaintenance(c.in, now)
		fe, _ := err.(problem.FieldErrors)
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: %v", c.in, err)
		case c.field != "" && fe[c.field] == "":
			t.Errorf("%+v: want an error on %s, got %v", c.in, c.field, err)
		case c.field == "" && got.Start.IsZero():
			t.Errorf("%+v: start not filled in", c.in)
		}
	}
}
