package server_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/callplane/callplane/server/servertest"
)

// A heartbeat the database refuses costs only its own node that beat: the
// other beats of the same flush are written (per-row fallback), and the
// bad one is not re-queued to poison every later flush. Versions are
// sanitised on rune boundaries: no NUL, no cut UTF-8 sequence.
func TestHeartbeatPoisonRowIsolated(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	ctx := context.Background()
	for _, n := range []string{"media-1", "media-2", "media-3"} {
		in.AddNode(t, n, "media", "127.0.0.1:"+map[string]string{"media-1": "5061", "media-2": "5062", "media-3": "5063"}[n], 10)
	}
	id := func(name string) int64 {
		return int64(count(t, in, "SELECT id FROM nodes WHERE name = $1", name))
	}
	// A refusal the sanitiser cannot prevent: the database itself says no
	// to one row's value.
	exec(t, in, "ALTER TABLE nodes ADD CONSTRAINT test_poison CHECK (agent_version <> 'poison')")
	hb := in.Nodes().NewHeartbeats(0)
	hb.Record(id("media-1"), 1, "poison")
	hb.Record(id("media-2"), 2, "2.0")
	// 63 ASCII bytes and a two-byte character: a byte cut at 64 would
	// split it; and a NUL, which Postgres refuses in text.
	long := strings.Repeat("v", 63) + "é"
	hb.Record(id("media-3"), 3, "\x00"+long)
	hb.Flush(ctx)

	if got := count(t, in, "SELECT count(*) FROM nodes WHERE name IN ('media-2', 'media-3') AND last_heartbeat_at IS NOT NULL"); got != 2 {
		t.Fatalf("healthy beats written: %d of 2", got)
	}
	var v string
	if err := in.Pool().QueryRow(ctx, "SELECT agent_version FROM nodes WHERE name = 'media-3'").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if !utf8.ValidString(v) || strings.ContainsRune(v, 0) || len(v) > 64 || v != strings.Repeat("v", 63) {
		t.Errorf("sanitised version = %q (%d bytes)", v, len(v))
	}
	if got := count(t, in, "SELECT count(*) FROM nodes WHERE name = 'media-1' AND last_heartbeat_at IS NOT NULL"); got != 0 {
		t.Errorf("the refused beat was written")
	}
	// The poison is not retried forever: the next flush with fresh beats
	// writes them all in one statement again.
	hb.Record(id("media-2"), 4, "2.1")
	hb.Flush(ctx)
	if got := count(t, in, "SELECT reported_load FROM nodes WHERE name = 'media-2'"); got != 4 {
		t.Errorf("next flush: media-2 load %d, want 4", got)
	}
}
