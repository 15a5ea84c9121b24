package health

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// Status is what every instance knows of the health checker, from the
// database: who ran its last round and when, and any disruption.
type Status struct {
	// Holder and Epoch name the leader whose checker last started or ran.
	Holder string
	Epoch  int64
	// StartedAt is when that checker started; RoundAt when it last
	// completed a round (nil: none yet), which took RoundTook over Nodes
	// nodes.
	StartedAt, RoundAt *time.Time
	RoundTook          time.Duration
	Nodes              int
	// Stalled: no checker has started or completed a round within
	// StallAfter; nothing is watching the nodes.
	Stalled    bool
	StallAfter time.Duration
	// Now is the database's clock, which the times above are read against.
	Now time.Time
	// Disruption is the disruption guard's state.
	Disruption Disruption
}

// Disruption is the disruption guard's state.
type Disruption struct {
	Active      bool
	Since       time.Time
	Failing     int
	Total       int
	Nodes       string
	ConfirmedAt *time.Time
	ConfirmedBy string
}

// LastRoundAge is how long ago the last round completed, or -1 when none
// has.
func (s Status) LastRoundAge() time.Duration {
	if s.RoundAt == nil {
		return -1
	}
	return max(s.Now.Sub(*s.RoundAt), 0)
}

// Status reads the checker's status and the disruption guard's state.
func (s *Store) Status(ctx context.Context) (Status, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return Status{}, err
	}
	row, err := db.Q.CheckerStatusGet(ctx, s.pool)
	if err != nil {
		return Status{}, fmt.Errorf("read checker status: %w", err)
	}
	out := Status{
		Holder: row.Holder, Epoch: row.Epoch, StartedAt: row.StartedAt, RoundAt: row.RoundAt,
		RoundTook: time.Duration(row.RoundMs) * time.Millisecond, Nodes: int(row.Nodes),
		StallAfter: st.StallAfter(), Now: row.DbNow,
	}
	last := row.StartedAt
	if row.RoundAt != nil && (last == nil || row.RoundAt.After(*last)) {
		last = row.RoundAt
	}
	out.Stalled = last == nil || row.DbNow.Sub(*last) > out.StallAfter
	d, err := db.Q.DisruptionGet(ctx, s.pool)
	if err != nil {
		return out, fmt.Errorf("read disruption: %w", err)
	}
	out.Disruption = disruptionFrom(d)
	return out, nil
}

func disruptionFrom(d dbsqlc.HealthDisruption) Disruption {
	out := Disruption{Active: d.StartedAt != nil, Failing: int(d.Failing), Total: int(d.Total), Nodes: d.Nodes,
		ConfirmedAt: d.ConfirmedAt, ConfirmedBy: d.ConfirmedBy}
	if d.StartedAt != nil {
		out.Since = *d.StartedAt
	}
	return out
}

// ErrNoDisruption: there is no disruption to confirm.
var ErrNoDisruption = errors.New("there is no unconfirmed disruption to confirm")

// ConfirmDisruption records an administrator's word that the nodes the
// disruption guard distrusts really failed: automatic failover and alerts
// proceed for the rest of this disruption. It is audited, refusals too.
func (s *Store) ConfirmDisruption(ctx context.Context, actor nodes.Actor) (Disruption, error) {
	var out Disruption
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		d, err := db.Q.DisruptionConfirm(ctx, tx, actor.Name)
		if db.IsNotFound(err) {
			return problem.FieldErrors{"disruption": ErrNoDisruption.Error()}
		}
		if err != nil {
			return err
		}
		out = disruptionFrom(d)
		detail := fmt.Sprintf("disruption since %s confirmed: %d of %d nodes failing (%s); automatic failover proceeds",
			out.Since.UTC().Format(time.RFC3339), out.Failing, out.Total, out.Nodes)
		if err := db.Q.AuditInsert(ctx, tx, dbsqlc.AuditInsertParams{
			Actor: actor.Name, Action: "health.disruption.confirm", Target: "health", Result: "ok", SourceAddr: actor.Addr, Detail: detail,
		}); err != nil {
			return err
		}
		return db.Q.EventInsert(ctx, tx, dbsqlc.EventInsertParams{Type: "health", Severity: "warning", Actor: actor.Name,
			Message: "Disruption confirmed by " + actor.Name + ": automatic failover and alerts proceed for the failing nodes"})
	})
	if err != nil {
		var fe problem.FieldErrors
		if errors.As(err, &fe) {
			_ = db.Q.AuditInsert(ctx, s.pool, dbsqlc.AuditInsertParams{
				Actor: actor.Name, Action: "health.disruption.confirm", Target: "health", Result: "error", SourceAddr: actor.Addr, Detail: err.Error(),
			})
		}
	}
	return out, err
}
