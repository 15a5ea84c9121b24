package outbox_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/alert/smtptest"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/outbox"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/server"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

func TestBackoff(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		attempts int
		want     time.Duration
	}{
		{0, 2 * time.Second}, {1, 4 * time.Second}, {2, 8 * time.Second}, {6, 128 * time.Second},
		{7, 256 * time.Second}, {8, 5 * time.Minute}, {40, 5 * time.Minute}, {-1, 2 * time.Second},
	} {
		if got := outbox.Backoff(tt.attempts); got != tt.want {
			t.Errorf("Backoff(%d) = %s; want %s", tt.attempts, got, tt.want)
		}
	}
}

// TestBurstIsOneEmail queues many node alerts and a capacity alert at once:
// the health changes go out as one grouped email, the capacity alert as its
// own, and every alert is marked sent.
func TestBurstIsOneEmail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, dbtest.URL(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	sink := smtptest.Start(t)
	log := slog.New(slog.DiscardHandler)
	store := settings.NewStore(pool, settings.Defaults{SMTPURL: sink.URL(), AlertFrom: "alerts@example.com", AlertTo: "ops@example.com"}, "https://portal.example", log)
	leader := server.NewLeader(pool, "cm-test", 2*time.Second, log)
	lctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go leader.Run(lctx)
	var epoch int64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if epoch, ok = leader.Epoch(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leadership")
		}
	}

	for _, n := range []string{"media-1", "media-2", "media-3"} {
		p, _ := json.Marshal(health.AlertPayload{Node: n, Kind: nodes.KindMedia, Address: "127.0.0.1:5060", From: "suspect", To: "down", At: time.Now(), Policy: "auto", WorkOutcome: "no work was on the node"})
		if err := db.Q.AlertInsert(ctx, pool, dbsqlc.AlertInsertParams{Type: health.AlertHealth, NodeName: n, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Q.AlertInsert(ctx, pool, dbsqlc.AlertInsertParams{Type: health.AlertCapacity, NodeName: "call", Payload: []byte(`{"work_kind":"call","unplaced":5}`)}); err != nil {
		t.Fatal(err)
	}
	m := outbox.New(outbox.Config{Outbox: nodes.NewService(pool, log), Store: store, Fence: leader, Log: log, PortalURL: "https://portal.example", GroupWindow: 300 * time.Millisecond})
	// Inside the grouping window nothing is sent.
	if n, err := m.Tick(ctx, epoch); err != nil || n != 0 {
		t.Fatalf("tick inside the window: %d, %v", n, err)
	}
	time.Sleep(350 * time.Millisecond)
	if n, err := m.Tick(ctx, epoch); err != nil || n != 4 {
		t.Fatalf("tick: sent %d, %v; want 4", n, err)
	}
	msgs := sink.WaitMessages(t, 2, 5*time.Second)
	if len(msgs) != 2 || !strings.Contains(msgs[0].Subject, "3 nodes DOWN") || !strings.Contains(msgs[1].Subject, "NO CAPACITY: 5 calls") {
		t.Fatalf("emails: %q, %q", msgs[0].Subject, msgs[1].Subject)
	}
	if n, err := m.Tick(ctx, epoch); err != nil || n != 0 {
		t.Fatalf("second tick sent %d again (%v)", n, err)
	}
	// A stale epoch sends nothing.
	if err := db.Q.AlertInsert(ctx, pool, dbsqlc.AlertInsertParams{Type: health.AlertCapacity, NodeName: "ivr", Payload: []byte(`{"work_kind":"ivr","unplaced":1}`)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(350 * time.Millisecond)
	if _, err := m.Tick(ctx, epoch-1); err == nil {
		t.Fatal("tick with a stale epoch: no error")
	}
	if got := len(sink.Messages()); got != 2 {
		t.Fatalf("stale epoch sent an email (%d total)", got)
	}
}
