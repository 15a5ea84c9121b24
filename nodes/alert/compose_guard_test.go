package alert

import (
	"strings"
	"testing"
	"time"
)

func TestComposeHealthSemantics(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := now.Add(-time.Minute)
	tests := []struct {
		name        string
		changes     []Change
		subject     string
		want, avoid []string
	}{
		{"manual, room", []Change{{Node: "ivr-1", Kind: "ivr", From: "up", To: "down", At: at, Policy: "manual"}},
			"[Callplane] DOWN: ivr-1 (ivr)", []string{"its work then moves to the remaining active ivr nodes"}, []string{"unplaced"}},
		{"manual, no room", []Change{{Node: "ivr-1", Kind: "ivr", From: "up", To: "down", At: at, Policy: "manual", NoRoom: true}},
			"[Callplane] DOWN: ivr-1 (ivr)", []string{"do not have room", "waits unplaced"}, []string{"its work then moves to the remaining"}},
		{"grouped, no room", []Change{
			{Node: "ivr-1", Kind: "ivr", From: "up", To: "down", At: at, Policy: "manual", NoRoom: true},
			{Node: "ivr-2", Kind: "ivr", From: "up", To: "down", At: at, Policy: "manual"}},
			"[Callplane] 2 nodes DOWN", []string{"waits unplaced until capacity returns"}, nil},
		{"agent lost", []Change{{Node: "media-1", Kind: "media", From: "up", To: "agent lost", At: at, Since: at.Add(-time.Minute), Policy: "auto"}},
			"[Callplane] AGENT LOST: media-1 (media)", []string{"nothing was failed over", "nodeagent process"}, []string{"DOWN"}},
		{"agents lost, grouped", []Change{
			{Node: "media-1", Kind: "media", From: "up", To: "agent lost", At: at},
			{Node: "media-2", Kind: "media", From: "up", To: "agent lost", At: at}},
			"[Callplane] 2 nodes AGENT LOST", []string{"AGENT LOST (2)"}, nil},
		{"agent back", []Change{{Node: "media-1", Kind: "media", From: "up", To: "agent back", At: at}},
			"[Callplane] AGENT BACK: media-1 (media)", []string{"heartbeating again"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject, text := composeAt(now, "https://portal.example", tt.changes)
			if subject != tt.subject {
				t.Errorf("subject %q; want %q", subject, tt.subject)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("body lacks %q:\n%s", w, text)
				}
			}
			for _, a := range tt.avoid {
				if strings.Contains(subject+text, a) {
					t.Errorf("body has %q:\n%s", a, text)
				}
			}
		})
	}
}

func TestComposeDisruptionAndHookFailure(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	subject, text := composeDisruptionAt(now, "https://portal.example", Disruption{Failing: 7, Total: 10, Share: 50, Nodes: []string{"a", "b"}, At: now})
	if subject != "[Callplane] DISRUPTION: 7 of 10 nodes failed at once; failover held" || !strings.Contains(text, "https://portal.example/settings") {
		t.Errorf("disruption: %q\n%s", subject, text)
	}
	subject, text = composeHookFailureAt(now, "https://portal.example", HookFailure{Node: "m1", Kind: "media", Ref: "c1", WorkKind: "call", Error: "hook start failed: exit status 3", At: now})
	if subject != "[Callplane] START FAILED: call c1 on m1 (media)" || !strings.Contains(text, "exit status 3") || !strings.Contains(text, "https://portal.example/nodes/m1") {
		t.Errorf("hook failure: %q\n%s", subject, text)
	}
}
