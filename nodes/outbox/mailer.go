package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/alert"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/server/metrics"
)

// Defaults of Config.
const (
	DefaultEvery       = 500 * time.Millisecond
	DefaultGroupWindow = 1500 * time.Millisecond
	DefaultSendTimeout = 20 * time.Second
	// ShutdownGrace is how long a send in progress may go on after the
	// mailer is told to stop.
	ShutdownGrace = 5 * time.Second
	// MaxBackoff caps the delay between retries.
	MaxBackoff = 5 * time.Minute
)

// Config configures a Mailer.
type Config struct {
	Pool  *pgxpool.Pool
	Store *health.Store
	Fence health.Fencer
	Log   *slog.Logger
	// PortalURL is the portal's base URL, for links in emails.
	PortalURL string
	// Every is how often the outbox is polled (DefaultEvery).
	Every time.Duration
	// GroupWindow: nothing is sent until the oldest due alert is this
	// old, so alerts raised together go out as one email.
	GroupWindow time.Duration
	// SendTimeout bounds one SMTP exchange.
	SendTimeout time.Duration
}

// Mailer sends the alert outbox. Run it on the leader only.
type Mailer struct {
	cfg    Config
	log    *slog.Logger
	warned bool
}

// New returns a Mailer.
func New(cfg Config) *Mailer {
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.GroupWindow < 0 {
		cfg.GroupWindow = 0
	} else if cfg.GroupWindow == 0 {
		cfg.GroupWindow = DefaultGroupWindow
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mailer{cfg: cfg, log: log}
}

// Backoff is the delay before retry number attempts+1 of an alert whose
// send failed attempts+1 times: 2s, 4s, 8s, … capped at MaxBackoff.
func Backoff(attempts int) time.Duration {
	if attempts < 0 {
		attempts = 0
	}
	if attempts > 16 {
		return MaxBackoff
	}
	return min(2*time.Second<<attempts, MaxBackoff)
}

// Run sends due alerts until ctx ends.
func (m *Mailer) Run(ctx context.Context, epoch int64) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		if _, err := m.Tick(ctx, epoch); err != nil && ctx.Err() == nil {
			if errors.Is(err, nodes.ErrNotLeader) {
				m.log.Warn("alert mailer: no longer the leader", "epoch", epoch)
				return
			}
			m.log.Error("alert mailer", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// group is the alerts that go out as one email.
type group struct {
	rows    []dbsqlc.Alert
	subject string
	text    string
	// nodes names what the alerts are about, for events.
	about []string
}

func (g group) ids() []int64 {
	ids := make([]int64, len(g.rows))
	for i, r := range g.rows {
		ids[i] = r.ID
	}
	return ids
}

func (g group) maxAttempts() int {
	n := 0
	for _, r := range g.rows {
		n = max(n, int(r.Attempts))
	}
	return n
}

// emailID is the stable id of a group's email, so a resend of the same
// alerts carries the same Message-ID.
func (g group) emailID() string {
	parts := make([]string, len(g.rows))
	for i, r := range g.rows {
		parts[i] = strconv.FormatInt(r.ID, 10)
	}
	return "alert-" + strings.Join(parts, "+")
}

// Tick sends what is due now and returns how many alerts were marked
// sent. Alerts wait while no SMTP server is configured.
func (m *Mailer) Tick(ctx context.Context, epoch int64) (int, error) {
	st, err := m.cfg.Store.Load(ctx)
	if err != nil {
		return 0, err
	}
	smtpCfg, ok := st.SMTP()
	if !ok || !st.MailReady() {
		if !m.warned {
			m.log.Warn("alert emails wait in the outbox: no SMTP server, sender or recipient is configured")
			m.warned = true
		}
		return 0, nil
	}
	m.warned = false
	age, err := db.Q.AlertDueAge(ctx, m.cfg.Pool)
	if err != nil {
		return 0, fmt.Errorf("outbox: %w", err)
	}
	if age < 0 || age < m.cfg.GroupWindow.Seconds() {
		return 0, nil
	}
	sent := 0
	// The transaction outlives a cancelled ctx (shutdown, lost lease) by a
	// little, so that an email the server accepted is marked sent rather
	// than sent again by the next leader. Sends themselves stop with ctx.
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.SendTimeout+30*time.Second)
	defer cancel()
	err = db.InTx(txCtx, m.cfg.Pool, func(tx pgx.Tx) error {
		// A send in progress when ctx ends gets a grace period to finish:
		// cutting it after DATA would leave an email delivered but
		// recorded as failed, and sent again.
		sendCtx, cancelSend := context.WithCancel(txCtx)
		defer cancelSend()
		stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(ShutdownGrace, cancelSend) })
		defer stopGrace()
		stopping := ctx
		ctx := txCtx
		// Check leadership first, inside a savepoint that is rolled back
		// at once: the check must not hold the lease row while the SMTP
		// server answers, or the leader could not renew its own lease.
		// The row locks taken by the claim below keep any other mailer
		// off these alerts until this transaction ends.
		if err := m.fenceCheck(ctx, tx, epoch); err != nil {
			return err
		}
		rows, err := db.Q.AlertClaimDue(ctx, tx)
		if err != nil || len(rows) == 0 {
			return err
		}
		groups, bad := m.compose(rows)
		sender := alert.NewSender(smtpCfg, m.cfg.SendTimeout)
		to := st.Recipients()
		type outcome struct {
			g     group
			reply string
			err   error
		}
		var outcomes []outcome
		for _, g := range groups {
			if stopping.Err() != nil {
				// Not sent: these alerts stay pending for the next leader.
				break
			}
			reply, err := sender.Send(sendCtx, alert.Message{From: st.AlertFrom, To: to, Subject: g.subject, Text: g.text, ID: g.emailID()})
			outcomes = append(outcomes, outcome{g: g, reply: reply, err: err})
		}
		// The marks below are not fenced again on purpose: the claimed
		// rows have been locked by this transaction since the claim, so
		// no other mailer can have sent them, and recording what this one
		// did is always right. Refusing the marks after a lost lease
		// would only make the next leader send the same alerts again.
		for _, b := range bad {
			if err := m.markFailed(ctx, tx, group{rows: []dbsqlc.Alert{b.row}, about: []string{b.row.NodeName}}, b.err); err != nil {
				return err
			}
		}
		for _, o := range outcomes {
			metrics.MailerAttempts.WithLabelValues(attemptResult(o.err)).Inc()
			switch {
			case o.err == nil:
				if err := db.Q.AlertMarkSent(ctx, tx, dbsqlc.AlertMarkSentParams{Ids: o.g.ids(), EmailID: o.g.emailID()}); err != nil {
					return err
				}
				sent += len(o.g.rows)
				m.log.Info("alert email sent", "alerts", len(o.g.rows), "subject", o.g.subject, "reply", o.reply)
				if err := m.events(ctx, tx, o.g, "info", fmt.Sprintf("Alert email sent to %s: %q (%s)", strings.Join(to, ", "), o.g.subject, o.reply)); err != nil {
					return err
				}
			case alert.IsPermanent(o.err):
				if err := m.markFailed(ctx, tx, o.g, o.err); err != nil {
					return err
				}
			default:
				delay := Backoff(o.g.maxAttempts())
				if err := db.Q.AlertMarkRetry(ctx, tx, dbsqlc.AlertMarkRetryParams{Ids: o.g.ids(), LastError: o.err.Error(), DelaySeconds: delay.Seconds()}); err != nil {
					return err
				}
				m.log.Warn("alert email not sent; will retry", "alerts", len(o.g.rows), "retry_in", delay, "err", o.err)
				if o.g.maxAttempts() == 0 {
					if err := m.events(ctx, tx, o.g, "warning", fmt.Sprintf("Alert email not sent yet, retrying with backoff: %v", o.err)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return sent, err
}

func (m *Mailer) fenceCheck(ctx context.Context, tx pgx.Tx, epoch int64) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	err = m.cfg.Fence.Fence(ctx, sp, epoch)
	if rerr := sp.Rollback(ctx); err == nil {
		err = rerr
	}
	return err
}

func (m *Mailer) markFailed(ctx context.Context, tx pgx.Tx, g group, cause error) error {
	if err := db.Q.AlertMarkFailed(ctx, tx, dbsqlc.AlertMarkFailedParams{Ids: g.ids(), LastError: cause.Error()}); err != nil {
		return err
	}
	m.log.Error("alert email failed permanently", "alerts", len(g.rows), "err", cause)
	return m.events(ctx, tx, g, "critical", fmt.Sprintf("Alert email failed permanently, not retried: %v (fix the alert settings; see /settings)", cause))
}

// events records what happened to a group's email, once per node it is
// about (or once without a node).
func (m *Mailer) events(ctx context.Context, tx pgx.Tx, g group, severity, msg string) error {
	about := g.about
	if len(about) == 0 {
		about = []string{""}
	}
	for _, name := range about {
		p := dbsqlc.EventInsertParams{NodeName: name, Type: "alert", Severity: severity, Message: msg, Actor: "alert-mailer"}
		if err := db.Q.EventInsert(ctx, tx, p); err != nil {
			return err
		}
	}
	return nil
}

type badAlert struct {
	row dbsqlc.Alert
	err error
}

// compose turns claimed alerts into emails: all health changes in one
// (grouped) email, and one email per capacity alert. Alerts that cannot be
// read are returned apart, to be marked failed.
func (m *Mailer) compose(rows []dbsqlc.Alert) ([]group, []badAlert) {
	var groups []group
	var bad []badAlert
	var hg group
	var changes []alert.Change
	for _, r := range rows {
		switch r.Type {
		case health.AlertHealth:
			p, err := health.ParseAlertPayload(r.Payload)
			if err != nil {
				bad = append(bad, badAlert{r, fmt.Errorf("unreadable alert payload: %w", err)})
				continue
			}
			hg.rows = append(hg.rows, r)
			hg.about = append(hg.about, p.Node)
			changes = append(changes, p.Change())
		case health.AlertCapacity:
			var p health.CapacityPayload
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				bad = append(bad, badAlert{r, fmt.Errorf("unreadable alert payload: %w", err)})
				continue
			}
			kind, ok := nodes.NodeKindFor(p.WorkKind)
			if !ok {
				kind = p.WorkKind
			}
			subject, text := alert.ComposeCapacity(kind, p.Unplaced, m.cfg.PortalURL)
			groups = append(groups, group{rows: []dbsqlc.Alert{r}, subject: subject, text: text})
		case health.AlertDisruption:
			var p health.DisruptionPayload
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				bad = append(bad, badAlert{r, fmt.Errorf("unreadable alert payload: %w", err)})
				continue
			}
			subject, text := alert.ComposeDisruption(m.cfg.PortalURL, alert.Disruption{
				Failing: p.Failing, Total: p.Total, Share: p.Share, Nodes: p.Nodes, At: p.At})
			groups = append(groups, group{rows: []dbsqlc.Alert{r}, subject: subject, text: text})
		case health.AlertHook:
			var p nodes.HookPayload
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				bad = append(bad, badAlert{r, fmt.Errorf("unreadable alert payload: %w", err)})
				continue
			}
			subject, text := alert.ComposeHookFailure(m.cfg.PortalURL, alert.HookFailure{
				Node: p.Node, Kind: p.Kind, Ref: p.Ref, WorkKind: p.WorkKind, Error: p.Error, Failures: int(p.Failures), At: p.At})
			groups = append(groups, group{rows: []dbsqlc.Alert{r}, subject: subject, text: text, about: []string{p.Node}})
		default:
			bad = append(bad, badAlert{r, fmt.Errorf("unknown alert type %q", r.Type)})
		}
	}
	if len(hg.rows) > 0 {
		hg.subject, hg.text = alert.Compose(m.cfg.PortalURL, changes)
		groups = append([]group{hg}, groups...)
	}
	return groups, bad
}

// attemptResult names a send attempt's outcome for the metrics.
func attemptResult(err error) string {
	switch {
	case err == nil:
		return "sent"
	case alert.IsPermanent(err):
		return "failed"
	}
	return "retry"
}
