package sipfront_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/server/servertest"
)

// The media node's agent runs its hook for a call set up by the front
// door with the call's Call-ID, From and To in the environment.
func TestAgentHookSeesTheCallIdentity(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	m := startMedia(t, modeAnswer)
	e.in.AddNode(t, "m1", "media", m.addr, 10)
	jt, err := e.in.Nodes().CreateJoinToken(context.Background(), nodes.Actor{Name: "test"}, "m1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	if _, err := agent.Join(context.Background(), agent.JoinOptions{Servers: []string{e.in.URL}, Token: jt.Token, CAPin: e.in.Pin(), StateDir: dir, Version: "test"}); err != nil {
		t.Fatalf("join: %v", err)
	}
	hookLog := filepath.Join(t.TempDir(), "hooks.log")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(ctx, agent.RunOptions{StateDir: dir, Version: "test", PollWait: 2 * time.Second,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			OnAssign: `echo "$CALLPLANE_ACTION|$CALLPLANE_REF|$CALLPLANE_CALL_ID|$CALLPLANE_FROM|$CALLPLANE_TO" >> ` + hookLog})
	}()
	t.Cleanup(func() { cancel(); <-done })
	e.waitUp(t, "m1")

	c := newCaller(t)
	sess, err := c.invite(t, e.front.Addr())
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	want := strings.Join([]string{"start", refOf(sess), sess.InviteRequest.CallID().Value(),
		sess.InviteRequest.From().Address.String(), sess.InviteRequest.To().Address.String()}, "|")
	waitFor(t, "the start hook with the call's identity", func() bool {
		b, _ := os.ReadFile(hookLog)
		return strings.Contains(string(b), want)
	})
	_ = sess.Ack(context.Background())
	_ = sess.Bye(context.Background())
}
