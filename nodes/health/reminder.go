package health

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
)

// Reminders repeats the down alert of a node that stays down while nobody
// has acknowledged it, every AlertReminder (a setting; off by default).
// Run it on the leader only; its writes carry the leader's epoch.
type Reminders struct {
	svc   *nodes.Service
	store *Store
	fence Fencer
	log   *slog.Logger
	// Every is how often due reminders are looked for.
	Every time.Duration
}

// NewReminders returns a Reminders.
func NewReminders(svc *nodes.Service, store *Store, fence Fencer, log *slog.Logger) *Reminders {
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
	err := db.InTx(ctx, r.svc.Pool(), func(tx pgx.Tx) error {
		if err := r.fence.Fence(ctx, tx, epoch); err != nil {
			return err
		}
		due, err := db.Q.AlertReminderDue(ctx, tx, every.Seconds())
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
			if err := db.Q.AlertInsert(ctx, tx, dbsqlc.AlertInsertParams{Type: AlertHealth, NodeName: d.Name, Payload: body}); err != nil {
				return err
			}
			node := dbsqlc.Node{ID: d.ID, Name: d.Name}
			msg := fmt.Sprintf("Reminder queued: node %s still down since %s and not acknowledged", d.Name, d.HealthChangedAt.UTC().Format(time.RFC3339))
			if err := r.svc.Event(ctx, tx, &node, "alert", "warning", nodes.ActorChecker.Name, msg); err != nil {
				return err
			}
			queued++
		}
		return nil
	})
	return queued, err
}
