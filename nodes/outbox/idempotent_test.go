package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

type mailerSetup struct {
	pool  *pgxpool.Pool
	sink  *smtptest.Server
	m     *outbox.Mailer
	epoch int64
}

func setupMailer(t *testing.T) mailerSetup {
	t.Helper()
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
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var ok bool
		if epoch, ok = leader.Epoch(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leadership")
		}
	}
	m := outbox.New(outbox.Config{Outbox: nodes.NewService(pool, log), Store: store, Fence: leader, Log: log, PortalURL: "https://portal.example", GroupWindow: -1})
	return mailerSetup{pool: pool, sink: sink, m: m, epoch: epoch}
}

func insertDown(t *testing.T, pool *pgxpool.Pool, names ...string) {
	t.Helper()
	for _, n := range names {
		p, _ := json.Marshal(health.AlertPayload{Node: n, Kind: nodes.KindMedia, Address: "127.0.0.1:5060", From: "suspect", To: "down", At: time.Now(), Policy: "auto", WorkOutcome: "no work was on the node"})
		if err := db.Q.AlertInsert(context.Background(), pool, dbsqlc.AlertInsertParams{Type: health.AlertHealth, NodeName: n, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
}

// The Message-ID of a grouped alert email for hundreds of nodes stays
// within RFC 5322's 998-character line (it once joined every alert id).
func TestLargeGroupMessageIDFitsALine(t *testing.T) {
	t.Parallel()
	ms := setupMailer(t)
	names := make([]string, 150)
	for i := range names {
		names[i] = fmt.Sprintf("media-%03d", i)
	}
	insertDown(t, ms.pool, names...)
	if n, err := ms.m.Tick(context.Background(), ms.epoch); err != nil || n != len(names) {
		t.Fatalf("tick: sent %d, %v", n, err)
	}
	msgs := ms.sink.WaitMessages(t, 1, 30*time.Second)
	id := msgs[0].Header.Get("Message-Id")
	if id == "" || len("Message-ID: "+id) > 998 || len(id) > 200 {
		t.Fatalf("Message-ID (%d chars): %.120s", len(id), id)
	}
	for line := range strings.SplitSeq(msgs[0].Data, "\r\n") {
		if len(line) > 998 {
			t.Fatalf("a header or body line of %d characters", len(line))
		}
	}
}

// A leader that dies after handing an email to SMTP but before recording
// it leaves the alerts marked sending: the next leader does not send them
// again (no duplicate), records them as sent-unconfirmed and says so in an
// event; alerts another instance is sending right now are left alone.
func TestSendingMarkPreventsResendAfterLeaderChange(t *testing.T) {
	t.Parallel()
	ms := setupMailer(t)
	ctx := context.Background()
	insertDown(t, ms.pool, "media-1", "media-2")
	// media-1: the previous leader marked it sending long ago and died;
	// media-2: another instance marked it a moment ago and is still at it.
	if _, err := ms.pool.Exec(ctx, `UPDATE alerts SET sending_since = now() - interval '10 minutes', email_id = 'alert-1' WHERE node_name = 'media-1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.pool.Exec(ctx, `UPDATE alerts SET sending_since = now(), email_id = 'alert-2' WHERE node_name = 'media-2'`); err != nil {
		t.Fatal(err)
	}
	if n, err := ms.m.Tick(ctx, ms.epoch); err != nil || n != 0 {
		t.Fatalf("tick: sent %d, %v", n, err)
	}
	if got := len(ms.sink.Messages()); got != 0 {
		t.Fatalf("%d emails sent again", got)
	}
	var state, lastErr string
	if err := ms.pool.QueryRow(ctx, `SELECT state, last_error FROM alerts WHERE node_name = 'media-1'`).Scan(&state, &lastErr); err != nil {
		t.Fatal(err)
	}
	if state != "sent" || !strings.Contains(lastErr, "unconfirmed") {
		t.Errorf("abandoned send: state %s, last_error %q", state, lastErr)
	}
	if err := ms.pool.QueryRow(ctx, `SELECT state FROM alerts WHERE node_name = 'media-2'`).Scan(&state); err != nil || state != "pending" {
		t.Errorf("send in progress elsewhere: state %s (%v)", state, err)
	}
	var events int
	if err := ms.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'alert' AND message LIKE '%unconfirmed%'`).Scan(&events); err != nil || events != 1 {
		t.Errorf("unconfirmed events: %d (%v)", events, err)
	}
	// A normal send still works and clears the mark.
	insertDown(t, ms.pool, "media-3")
	if n, err := ms.m.Tick(ctx, ms.epoch); err != nil || n != 1 {
		t.Fatalf("tick: sent %d, %v", n, err)
	}
	var marked int
	if err := ms.pool.QueryRow(ctx, `SELECT count(*) FROM alerts WHERE node_name = 'media-3' AND sending_since IS NULL AND state = 'sent'`).Scan(&marked); err != nil || marked != 1 {
		t.Errorf("sent alert keeps its sending mark (%d, %v)", marked, err)
	}
}
