package nodes

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// The alert outbox, as the mailer (nodes/outbox) works it. The mailer
// decides what each claimed alert becomes (which go out together, which
// cannot be read) and what the SMTP server's answer means; the domain owns
// the transactions and the SQL, and records the mailer's decisions as an
// OutboxPlan.

// AlertOutcome is what becomes of alerts in the outbox.
type AlertOutcome int

// Alert outcomes.
const (
	// AlertSending marks alerts taken for an email, before it goes to
	// SMTP, so that no other mailer sends them again.
	AlertSending AlertOutcome = iota + 1
	// AlertSent: the SMTP server accepted the email.
	AlertSent
	// AlertRetry: due again after Delay, with LastError.
	AlertRetry
	// AlertFailed: failed for good, not retried.
	AlertFailed
)

// AlertMark records an outcome of the alerts sent as one email.
type AlertMark struct {
	IDs       []int64
	Outcome   AlertOutcome
	EmailID   string        // AlertSending, AlertSent
	LastError string        // AlertRetry, AlertFailed
	Delay     time.Duration // AlertRetry
}

// OutboxEvent is an event the mailer writes about an email, about a node
// (Node "" for none).
type OutboxEvent struct {
	Node, Severity, Message string
}

// OutboxPlan is what the mailer decided: the marks, then the events, all
// written in one transaction.
type OutboxPlan struct {
	Marks  []AlertMark
	Events []OutboxEvent
}

// actorMailer writes the mailer's events.
const actorMailer = "alert-mailer"

// AlertDueAge is how long the oldest alert due to be sent has waited;
// false when none is due.
func (s *Service) AlertDueAge(ctx context.Context) (time.Duration, bool, error) {
	age, err := s.q.AlertDueAge(ctx, s.pool)
	if err != nil || age < 0 {
		return 0, false, err
	}
	return time.Duration(age * float64(time.Second)), true, nil
}

// ClaimAlerts takes the due alerts for a mailer that leads with epoch, in
// one transaction committed before any of them goes to SMTP, so that a
// leader that dies mid-send leaves a mark and its successor does not send
// the same email again. First it resolves the sends abandoned for longer
// than abandonAfter (recorded as sent, unconfirmed: sending again could
// deliver twice); then plan sees those and the claimed alerts, and what
// it returns (typically AlertSending marks) is written in the same
// transaction. The fence is checked first, in a savepoint rolled back at
// once, so the check does not hold the lease row.
func (s *Service) ClaimAlerts(ctx context.Context, fence Fencer, epoch int64, abandonAfter time.Duration,
	plan func(abandoned, due []Alert) OutboxPlan) error {
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fenceCheck(ctx, tx, fence, epoch); err != nil {
			return err
		}
		abandoned, err := s.q.AlertResolveAbandoned(ctx, tx, abandonAfter.Seconds())
		if err != nil {
			return err
		}
		due, err := s.q.AlertClaimDue(ctx, tx)
		if err != nil {
			return err
		}
		return s.applyOutbox(ctx, tx, plan(fromRows(abandoned, alertFromRow), fromRows(due, alertFromRow)))
	})
}

// RecordAlerts writes what became of sent emails, in one transaction.
// It checks no fence on purpose: the sending mark has kept every other
// mailer off these alerts, and recording what this one did is always
// right.
func (s *Service) RecordAlerts(ctx context.Context, p OutboxPlan) error {
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error { return s.applyOutbox(ctx, tx, p) })
}

func (s *Service) applyOutbox(ctx context.Context, tx pgx.Tx, p OutboxPlan) error {
	for _, m := range p.Marks {
		var err error
		switch m.Outcome {
		case AlertSending:
			err = s.q.AlertMarkSending(ctx, tx, dbsqlc.AlertMarkSendingParams{Ids: m.IDs, EmailID: m.EmailID})
		case AlertSent:
			err = s.q.AlertMarkSent(ctx, tx, dbsqlc.AlertMarkSentParams{Ids: m.IDs, EmailID: m.EmailID})
		case AlertRetry:
			err = s.q.AlertMarkRetry(ctx, tx, dbsqlc.AlertMarkRetryParams{Ids: m.IDs, LastError: m.LastError, DelaySeconds: m.Delay.Seconds()})
		case AlertFailed:
			err = s.q.AlertMarkFailed(ctx, tx, dbsqlc.AlertMarkFailedParams{Ids: m.IDs, LastError: m.LastError})
		}
		if err != nil {
			return err
		}
	}
	for _, e := range p.Events {
		if err := s.q.EventInsert(ctx, tx, dbsqlc.EventInsertParams{NodeName: e.Node, Type: "alert", Severity: e.Severity, Message: e.Message, Actor: actorMailer}); err != nil {
			return err
		}
	}
	return nil
}

// fenceCheck checks the leader's fence inside tx, in a savepoint it rolls
// back at once.
func fenceCheck(ctx context.Context, tx pgx.Tx, fence Fencer, epoch int64) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	err = fence.Fence(ctx, sp, epoch)
	if rerr := sp.Rollback(ctx); err == nil {
		err = rerr
	}
	return err
}
