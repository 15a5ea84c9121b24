package health

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/callplane/callplane/nodes"
)

// Reminders repeats the down alert of a node that stays down while nobody
// has acknowledged it, every AlertReminder (a setting; off by default).
// Run it on the leader only; its writes carry the leader's epoch.
type Reminders struct {
	svc   ReminderDomain
	store *Store
	fence Fencer
	log   *slog.Logger
	// Every is how often due reminders are looked for.
	Every time.Duration
}

// ReminderDomain is what Reminders needs of the cluster domain
// (*nodes.Service implements it): a fenced transaction in which it reads
// the due reminders and queues them.
type ReminderDomain interface {
	InCheckerTx(ctx context.Context, fence nodes.Fencer, epoch int64, fn func(*nodes.CheckerTx) error) error
}

// NewReminders returns a Reminders.
func NewReminders(svc ReminderDomain, store *Store, fence Fencer, log *slog.Logger) *Reminders {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reminders{svc: svc, store: store, fence: fence, log: log, Every: 5 * time.Second}
}

// Run queues due reminders until ctx ends.
func (r *Reminders) Run(ctx context.Context, epoch int64) {
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := r.store.Load(ctx)
		if err != nil || st.AlertReminder <= 0 {
			continue
		}
		if _, err := r.Queue(ctx, epoch, st.AlertReminder); err != nil && ctx.Err() == nil {
			r.log.Error("queue alert reminders", "err", err)
		}
	}
}

// Queue queues one reminder for every node down for longer than every
// since its last alert, not acknowledged, not disabled and not in
// maintenance. It returns how many it queued.
func (r *Reminders) Queue(ctx context.Context, epoch int64, every time.Duration) (int, error) {
	queued := 0
	err := r.svc.InCheckerTx(ctx, r.fence, epoch, func(tx *nodes.CheckerTx) error {
		queued = 0
		due, err := tx.RemindersDue(ctx, every)
		if err != nil {
			return fmt.Errorf("find due reminders: %w", err)
		}
		for _, d := range due {
			p, err := ParseAlertPayload(d.Payload)
			if err != nil {
				return fmt.Errorf("alert %d payload: %w", d.AlertID, err)
			}
			p.Reminder = true
			body, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := tx.QueueAlert(ctx, AlertHealth, d.Node, body); err != nil {
				return err
			}
			node := nodes.Node{ID: d.NodeID, Name: d.Node}
			msg := fmt.Sprintf("Reminder queued: node %s still down since %s and not acknowledged", d.Node, d.HealthChangedAt.UTC().Format(time.RFC3339))
			if err := tx.Event(ctx, &node, "alert", "warning", msg); err != nil {
				return err
			}
			queued++
		}
		return nil
	})
	return queued, err
}
