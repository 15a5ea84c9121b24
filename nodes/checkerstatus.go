package nodes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// What every instance reads of the health checker, and the one decision
// an administrator takes about it: confirming a disruption. The checker
// writes these rows through CheckerTx (checkertx.go).

// CheckerStatus is the health checker's row: which leader last started
// it or completed a round, and when, with the disruption guard's state.
type CheckerStatus struct {
	// Holder and Epoch name the leader whose checker last started or ran.
	Holder string
	Epoch  int64
	// StartedAt is when that checker started; RoundAt when it last
	// completed a round (nil: none yet), which took RoundTook over Nodes
	// nodes.
	StartedAt, RoundAt *time.Time
	RoundTook          time.Duration
	Nodes              int
	// Now is the database's clock, which the times above are read against.
	Now time.Time
	// Disruption is the disruption guard's state.
	Disruption Disruption
}

// LastActive is the checker's latest sign of life: its start or its last
// completed round, whichever is later (nil: neither yet).
func (c CheckerStatus) LastActive() *time.Time {
	last := c.StartedAt
	if c.RoundAt != nil && (last == nil || c.RoundAt.After(*last)) {
		last = c.RoundAt
	}
	return last
}

// Disruption is the disruption guard's state: whether nodes fail at once
// (Active) since when, how many of how many, which, and whether an
// administrator confirmed it.
type Disruption struct {
	Active      bool
	Since       time.Time
	Failing     int
	Total       int
	Nodes       string
	ConfirmedAt *time.Time
	ConfirmedBy string
}

// Held reports whether the disruption holds automatic failover and
// per-node alerts: it is on and nobody confirmed it.
func (d Disruption) Held() bool { return d.Active && d.ConfirmedAt == nil }

func disruptionFromRow(d dbsqlc.HealthDisruption) Disruption {
	out := Disruption{Active: d.StartedAt != nil, Failing: int(d.Failing), Total: int(d.Total), Nodes: d.Nodes,
		ConfirmedAt: d.ConfirmedAt, ConfirmedBy: d.ConfirmedBy}
	if d.StartedAt != nil {
		out.Since = *d.StartedAt
	}
	return out
}

// CheckerStatus reads the checker's status and the disruption guard.
func (s *Service) CheckerStatus(ctx context.Context) (CheckerStatus, error) {
	row, err := s.q.CheckerStatusGet(ctx, s.pool)
	if err != nil {
		return CheckerStatus{}, fmt.Errorf("read checker status: %w", err)
	}
	out := CheckerStatus{
		Holder: row.Holder, Epoch: row.Epoch, StartedAt: row.StartedAt, RoundAt: row.RoundAt,
		RoundTook: time.Duration(row.RoundMs) * time.Millisecond, Nodes: int(row.Nodes), Now: row.DbNow,
	}
	d, err := s.q.DisruptionGet(ctx, s.pool)
	if err != nil {
		return out, fmt.Errorf("read disruption: %w", err)
	}
	out.Disruption = disruptionFromRow(d)
	return out, nil
}

// ErrNoDisruption: there is no disruption to confirm.
var ErrNoDisruption = errors.New("there is no unconfirmed disruption to confirm")

// ConfirmDisruption records an administrator's word that the nodes the
// disruption guard distrusts really failed: automatic failover and alerts
// proceed for the rest of this disruption. It is audited with an event,
// in one transaction; a refusal (no disruption to confirm) is
// problem.FieldErrors naming "disruption", audited too.
func (s *Service) ConfirmDisruption(ctx context.Context, actor Actor) (Disruption, error) {
	const action = "health.disruption.confirm"
	var out Disruption
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		d, err := s.q.DisruptionConfirm(ctx, tx, actor.Name)
		if db.IsNotFound(err) {
			return problem.FieldErrors{"disruption": ErrNoDisruption.Error()}
		}
		if err != nil {
			return err
		}
		out = disruptionFromRow(d)
		detail := fmt.Sprintf("disruption since %s confirmed: %d of %d nodes failing (%s); automatic failover proceeds",
			out.Since.UTC().Format(time.RFC3339), out.Failing, out.Total, out.Nodes)
		if err := s.audit(ctx, tx, actor, action, "health", detail); err != nil {
			return err
		}
		return s.event(ctx, tx, nil, "health", "warning", actor.Name,
			"Disruption confirmed by "+actor.Name+": automatic failover and alerts proceed for the failing nodes")
	})
	var fe problem.FieldErrors
	if errors.As(err, &fe) {
		s.AuditFailure(ctx, actor, action, "health", fe)
	}
	return out, err
}
