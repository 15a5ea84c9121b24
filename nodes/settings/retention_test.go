package settings

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// Retention has defaults, refuses bad periods naming each field and
// saving nothing, stores good ones with an audit row of what changed, and
// shows them back as entered.
func TestRetentionSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.New(t)
	s := NewStore(pool, Defaults{}, "", nil)
	r, err := s.Retention(ctx)
	if err != nil || r[KeyRetentionAudit] != 365*24*time.Hour || r[KeyRetentionProbes] != time.Hour {
		t.Fatalf("defaults: %v %v", r, err)
	}
	var fe problem.FieldErrors
	_, err = s.SaveRetention(ctx, admin, map[string]string{KeyRetentionEvents: "soon", KeyRetentionAudit: "1m"})
	if !errors.As(err, &fe) || fe[KeyRetentionEvents] == "" || fe[KeyRetentionAudit] == "" {
		t.Fatalf("bad input: %v", err)
	}
	if count(t, pool, "SELECT count(*) FROM settings WHERE key LIKE 'retention_%'") != 0 {
		t.Fatal("invalid input saved something")
	}
	if _, err := s.SaveRetention(ctx, admin, map[string]string{KeyRetentionEvents: "30d", KeyRetentionProbes: "36h"}); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Retention(ctx)
	if r[KeyRetentionEvents] != 30*24*time.Hour || r[KeyRetentionProbes] != 36*time.Hour || r[KeyRetentionWork] != 7*24*time.Hour {
		t.Fatalf("saved: %v", r)
	}
	if got := FormatRetention(r[KeyRetentionEvents]) + " " + FormatRetention(r[KeyRetentionProbes]); got != "30d 36h" {
		t.Fatalf("shown as %q", got)
	}
	if count(t, pool, "SELECT count(*) FROM audit_log WHERE action = 'settings.retention' AND actor = $1 AND detail LIKE '%retention_events: 90d -> 30d%'", admin.Name) != 1 {
		t.Fatal("the change is not audited")
	}
	if a := r.PruneAges(); a != (nodes.PruneAges{Work: 7 * 24 * time.Hour, Events: 30 * 24 * time.Hour, Audit: 365 * 24 * time.Hour, Alerts: 90 * 24 * time.Hour}) {
		t.Fatalf("ages for the pruning: %+v", a)
	}
	// The health settings' form neither sees nor resets them.
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, admin, st.Values()); err != nil {
		t.Fatal(err)
	}
	if r2, _ := s.Retention(ctx); r2[KeyRetentionEvents] != 30*24*time.Hour {
		t.Fatalf("saving the health settings changed retention: %v", r2)
	}
}
