package alert

import (
	"strings"
	"testing"
	"time"
)

var (
	testNow = time.Date(2025, 3, 4, 3, 10, 0, 0, time.UTC)
	portal  = "https://pbx.example.com:8443/"
)

func mustContain(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, text)
		}
	}
}

func mustNotContain(t *testing.T, what, text string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(text, w) {
			t.Errorf("%s contains %q:\n%s", what, w, text)
		}
	}
}

func downChange(name, kind, policy string) Change {
	return Change{
		Node: name, Kind: kind, Address: "10.0.0.5:5060",
		From: "suspect", To: "down",
		At:          testNow.Add(-4*time.Minute - 10*time.Second),
		Reason:      "SIP OPTIONS timeout after 800ms; heartbeat 7s old",
		Policy:      policy,
		WorkOutcome: "12 calls moved to media-2 (8), media-3 (4)",
	}
}

func TestComposeDownAuto(t *testing.T) {
	t.Parallel()
	subject, text := composeAt(testNow, portal, []Change{downChange("media-1", "media", "auto")})
	if subject != "[Callplane] DOWN: media-1 (media)" {
		t.Errorf("subject = %q", subject)
	}
	mustContain(t, "body", text,
		"media-1", "media", "10.0.0.5:5060",
		"2025-03-04T03:05:50Z (4m10s ago)",
		"SIP OPTIONS timeout after 800ms; heartbeat 7s old",
		"12 calls moved to media-2 (8), media-3 (4)",
		"moved to the\n  remaining active nodes",
		"https://pbx.example.com:8443/nodes/media-1",
	)
	mustNotContain(t, "body", text, "disable the node", "8443//nodes")
}

func TestComposeDownManual(t *testing.T) {
	t.Parallel()
	c := downChange("ivr 1", "ivr", "manual")
	c.WorkOutcome = "3 IVRs still on the node (manual policy)"
	subject, text := composeAt(testNow, portal, []Change{c})
	if subject != "[Callplane] DOWN: ivr 1 (ivr)" {
		t.Errorf("subject = %q", subject)
	}
	mustContain(t, "body", text,
		"Node ivr 1 (ivr) is DOWN.",
		"3 IVRs still on the node (manual policy)",
		"manual",
		"Open https://pbx.example.com:8443/nodes/ivr%201 and disable the node",
		"moves to the remaining active ivr nodes",
		"What to do",
	)
	mustNotContain(t, "body", text, "moved automatically")
}

func TestComposeRecovered(t *testing.T) {
	t.Parallel()
	c := Change{
		Node: "media-1", Kind: "media", Address: "10.0.0.5:5060",
		From: "down", To: "up",
		Since:  testNow.Add(-5 * time.Minute),
		At:     testNow.Add(-5*time.Minute + 2*time.Minute + 13*time.Second),
		Policy: "auto",
	}
	subject, text := composeAt(testNow, portal, []Change{c})
	if subject != "[Callplane] RECOVERED: media-1 (media) after 2m13s" {
		t.Errorf("subject = %q", subject)
	}
	mustContain(t, "body", text,
		"RECOVERED after 2m13s down",
		"Down from:  2025-03-04T03:05:00Z (5m00s ago)",
		"Up since:   2025-03-04T03:07:13Z (2m47s ago)",
		"Downtime:   2m13s",
		"https://pbx.example.com:8443/nodes/media-1",
	)
}

func TestComposeGrouped(t *testing.T) {
	t.Parallel()
	var changes []Change
	for _, n := range []string{"media-3", "media-1", "media-2"} {
		changes = append(changes, downChange(n, "media", "auto"))
	}
	for _, n := range []string{"queue-1", "ivr-1", "ivr-2", "meeting-1"} {
		kind, _, _ := strings.Cut(n, "-")
		c := downChange(n, kind, "manual")
		c.WorkOutcome = "work still on the node (manual policy)"
		changes = append(changes, c)
	}
	for _, n := range []string{"im-1", "im-2"} {
		changes = append(changes, Change{Node: n, Kind: "im", Address: "10.0.1.1:5222", From: "down", To: "up",
			Since: testNow.Add(-time.Hour), At: testNow.Add(-time.Minute), Policy: "manual"})
	}
	maint := downChange("media-9", "media", "auto")
	maint.Maintenance = true
	changes = append(changes[:1], append([]Change{maint}, changes[1:]...)...)

	subject, text := composeAt(testNow, portal, changes)
	if subject != "[Callplane] 8 nodes DOWN, 2 RECOVERED" {
		t.Errorf("subject = %q", subject)
	}
	for _, c := range changes {
		mustContain(t, "body", text, c.Node+" ("+c.Kind+")")
	}
	mustContain(t, "body", text,
		"DOWN (8):", "RECOVERED (2):",
		"after 59m00s down",
		"[maintenance]",
		"ACTION NEEDED (manual failover)",
		"  - ivr-1: https://pbx.example.com:8443/nodes/ivr-1",
		"  - queue-1: https://pbx.example.com:8443/nodes/queue-1",
	)
	mustNotContain(t, "action list", text, "  - media-1: https")
	// Sorted: all DOWN before RECOVERED, names in order within a group.
	if i, j := strings.Index(text, "media-1 (media)"), strings.Index(text, "media-2 (media)"); i > j {
		t.Errorf("media-1 listed after media-2")
	}
	if i, j := strings.Index(text, "RECOVERED (2)"), strings.Index(text, "DOWN (8)"); i < j {
		t.Errorf("RECOVERED listed before DOWN")
	}

	subject, _ = composeAt(testNow, portal, changes[len(changes)-2:])
	if subject != "[Callplane] 2 nodes RECOVERED" {
		t.Errorf("subject = %q", subject)
	}
	subject, _ = composeAt(testNow, portal, []Change{changes[0], changes[len(changes)-1]})
	if subject != "[Callplane] 1 node DOWN, 1 RECOVERED" {
		t.Errorf("subject = %q", subject)
	}
}

func TestComposeCapacity(t *testing.T) {
	t.Parallel()
	subject, text := composeCapacityAt(testNow, "media", 5, portal)
	if subject != "[Callplane] NO CAPACITY: 5 calls unplaced (media)" {
		t.Errorf("subject = %q", subject)
	}
	mustContain(t, "body", text, "5 calls", "UNPLACED", "placed\nautomatically as soon as capacity returns",
		"https://pbx.example.com:8443/nodes", "https://pbx.example.com:8443/work")
	subject, _ = composeCapacityAt(testNow, "ivr", 1, portal)
	if subject != "[Callplane] NO CAPACITY: 1 IVR unplaced (ivr)" {
		t.Errorf("subject = %q", subject)
	}
	subject, _ = composeCapacityAt(testNow, "queue", 0, portal)
	if !strings.Contains(subject, "CAPACITY OK") {
		t.Errorf("subject = %q", subject)
	}
}

func TestComposeTest(t *testing.T) {
	t.Parallel()
	subject, text := composeTestAt(testNow, portal)
	if subject != "[Callplane] Test email" {
		t.Errorf("subject = %q", subject)
	}
	mustContain(t, "body", text, "test email", "2025-03-04T03:10:00Z", "https://pbx.example.com:8443/settings")
	// The exported wrappers work with the clock.
	if s, _ := ComposeTest(""); s != subject {
		t.Errorf("ComposeTest subject = %q", s)
	}
	if s, _ := Compose("", nil); s == "" {
		t.Error("Compose(nil) has no subject")
	}
	if s, _ := ComposeCapacity("im", 2, ""); !strings.Contains(s, "2 IM shards") {
		t.Errorf("ComposeCapacity subject = %q", s)
	}
}

func TestHuman(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                                     "0s",
		45*time.Second + 400*time.Millisecond: "45s",
		2*time.Minute + 13*time.Second:        "2m13s",
		time.Hour + 5*time.Minute + 59*time.Second: "1h05m",
		76 * time.Hour: "3d4h",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}
