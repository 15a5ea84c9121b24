package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/alert"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/settings"
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

// Outbox is what the mailer needs of the alert outbox (*nodes.Service
// implements it): how long the oldest due alert has waited, claiming the
// due alerts behind the leader's fence, and recording what became of
// them. The mailer decides; the domain owns the transactions and the SQL.
type Outbox interface {
	AlertDueAge(ctx context.Context) (time.Duration, bool, error)
	ClaimAlerts(ctx context.Context, fence nodes.Fencer, epoch int64, abandonAfter time.Duration,
		plan func(abandoned, due []nodes.Alert) nodes.OutboxPlan) error
	RecordAlerts(ctx context.Context, p nodes.OutboxPlan) error
}

// SettingsSource is where the mailer reads the alert settings (SMTP
// server, sender, recipients): a *settings.Store.
type SettingsSource interface {
	Load(ctx context.Context) (settings.Settings, error)
}

// Config configures a Mailer.
type Config struct {
	Outbox Outbox
	Store  SettingsSource
	Fence  nodes.Fencer
	Log    *slog.Logger
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
	rows    []nodes.Alert
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
// alerts carries the same Message-ID: the alert ids joined, or for a large
// group the first and last id, the count and a digest of all of them, so
// the Message-ID header stays far within RFC 5322's 998-character line.
func (g group) emailID() string {
	parts := make([]string, len(g.rows))
	for i, r := range g.rows {
		parts[i] = strconv.FormatInt(r.ID, 10)
	}
	id := "alert-" + strings.Join(parts, "+")
	if len(id) <= maxEmailID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return fmt.Sprintf("alert-%s-%s-n%d-%s", parts[0], parts[len(parts)-1], len(parts), hex.EncodeToString(sum[:8]))
}

// maxEmailID bounds an email id (the left part of the Message-ID).
const maxEmailID = 100

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
	age, due, err := m.cfg.Outbox.AlertDueAge(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbox: %w", err)
	}
	if !due || age < m.cfg.GroupWindow {
		return 0, nil
	}
	// Database work outlives a cancelled ctx (shutdown, lost lease) by a
	// little, so that an email the server accepted is recorded as sent.
	// Sends themselves stop with ctx, after a grace period.
	dbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.SendTimeout+30*time.Second)
	defer cancel()
	groups, err := m.claim(dbCtx, epoch)
	if err != nil || len(groups) == 0 {
		return 0, err
	}
	// A send in progress when ctx ends gets a grace period to finish:
	// cutting it after DATA would leave an email delivered but recorded
	// as failed.
	sendCtx, cancelSend := context.WithCancel(dbCtx)
	defer cancelSend()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(ShutdownGrace, cancelSend) })
	defer stopGrace()
	sender := alert.NewSender(smtpCfg, m.cfg.SendTimeout)
	to := st.Recipients()
	var outcomes []outcome
	for _, g := range groups {
		if ctx.Err() != nil {
			// Not sent: handed back to the outbox for the next leader.
			outcomes = append(outcomes, outcome{g: g, err: errNotAttempted})
			continue
		}
		reply, err := sender.Send(sendCtx, alert.Message{From: st.AlertFrom, To: to, Subject: g.subject, Text: g.text, ID: g.emailID()})
		outcomes = append(outcomes, outcome{g: g, reply: reply, err: err})
	}
	// The outcomes are recorded without another fence check on purpose:
	// the sending mark has kept every other mailer off these alerts, and
	// recording what this one did is always right.
	var p nodes.OutboxPlan
	sent := 0
	for _, o := range outcomes {
		sent += m.record(&p, o, to)
	}
	if err := m.cfg.Outbox.RecordAlerts(dbCtx, p); err != nil {
		return 0, err
	}
	return sent, nil
}

// errNotAttempted: the mailer stopped before this group's turn.
var errNotAttempted = errors.New("not attempted: the mailer stopped")

type outcome struct {
	g     group
	reply string
	err   error
}

// claim resolves abandoned sends, takes the due alerts and marks them
// sending — committed before any of them goes to SMTP, so that a leader
// that dies mid-send leaves a mark and its successor does not send the
// same email again.
func (m *Mailer) claim(ctx context.Context, epoch int64) ([]group, error) {
	var groups []group
	abandonAfter := m.cfg.SendTimeout + ShutdownGrace + 30*time.Second
	err := m.cfg.Outbox.ClaimAlerts(ctx, m.cfg.Fence, epoch, abandonAfter, func(abandoned, due []nodes.Alert) nodes.OutboxPlan {
		groups = nil
		var p nodes.OutboxPlan
		for _, a := range abandoned {
			m.log.Warn("alert email delivery unconfirmed: the instance sending it stopped mid-send; not sent again", "alert", a.ID, "email_id", a.EmailID)
			g := group{rows: []nodes.Alert{a}, about: []string{a.NodeName}}
			m.events(&p, g, "warning", fmt.Sprintf("Alert email %s: delivery unconfirmed, the instance sending it stopped mid-send; not sent again to avoid a duplicate (check the mailbox)", a.EmailID))
		}
		if len(due) == 0 {
			return p
		}
		var bad []badAlert
		groups, bad = m.compose(due)
		for _, b := range bad {
			m.markFailed(&p, group{rows: []nodes.Alert{b.row}, about: []string{b.row.NodeName}}, b.err)
		}
		for _, g := range groups {
			p.Marks = append(p.Marks, nodes.AlertMark{IDs: g.ids(), Outcome: nodes.AlertSending, EmailID: g.emailID()})
		}
		return p
	})
	return groups, err
}

// record adds one group's outcome to p and returns how many alerts it
// sent.
func (m *Mailer) record(p *nodes.OutboxPlan, o outcome, to []string) int {
	if !errors.Is(o.err, errNotAttempted) {
		metrics.MailerAttempts.WithLabelValues(attemptResult(o.err)).Inc()
	}
	switch {
	case o.err == nil:
		p.Marks = append(p.Marks, nodes.AlertMark{IDs: o.g.ids(), Outcome: nodes.AlertSent, EmailID: o.g.emailID()})
		m.log.Info("alert email sent", "alerts", len(o.g.rows), "subject", o.g.subject, "reply", o.reply)
		m.events(p, o.g, "info", fmt.Sprintf("Alert email sent to %s: %q (%s)", strings.Join(to, ", "), o.g.subject, o.reply))
		return len(o.g.rows)
	case errors.Is(o.err, errNotAttempted):
		// Due again at once, attempts unchanged.
		p.Marks = append(p.Marks, nodes.AlertMark{IDs: o.g.ids(), Outcome: nodes.AlertRetry})
		return 0
	case alert.IsPermanent(o.err):
		m.markFailed(p, o.g, o.err)
		return 0
	}
	delay := Backoff(o.g.maxAttempts())
	p.Marks = append(p.Marks, nodes.AlertMark{IDs: o.g.ids(), Outcome: nodes.AlertRetry, LastError: o.err.Error(), Delay: delay})
	m.log.Warn("alert email not sent; will retry", "alerts", len(o.g.rows), "retry_in", delay, "err", o.err)
	if o.g.maxAttempts() == 0 {
		m.events(p, o.g, "warning", fmt.Sprintf("Alert email not sent yet, retrying with backoff: %v", o.err))
	}
	return 0
}

func (m *Mailer) markFailed(p *nodes.OutboxPlan, g group, cause error) {
	p.Marks = append(p.Marks, nodes.AlertMark{IDs: g.ids(), Outcome: nodes.AlertFailed, LastError: cause.Error()})
	m.log.Error("alert email failed permanently", "alerts", len(g.rows), "err", cause)
	m.events(p, g, "critical", fmt.Sprintf("Alert email failed permanently, not retried: %v (fix the alert settings; see /settings)", cause))
}

// events records what happened to a group's email, once per node it is
// about (or once without a node).
func (m *Mailer) events(p *nodes.OutboxPlan, g group, severity, msg string) {
	about := g.about
	if len(about) == 0 {
		about = []string{""}
	}
	for _, name := range about {
		p.Events = append(p.Events, nodes.OutboxEvent{Node: name, Severity: severity, Message: msg})
	}
}

type badAlert struct {
	row nodes.Alert
	err error
}

// compose turns claimed alerts into emails: all health changes in one
// (grouped) email, and one email per capacity alert. Alerts that cannot be
// read are returned apart, to be marked failed.
func (m *Mailer) compose(rows []nodes.Alert) ([]group, []badAlert) {
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
			groups = append(groups, group{rows: []nodes.Alert{r}, subject: subject, text: text})
		case health.AlertDisruption:
			var p health.DisruptionPayload
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				bad = append(bad, badAlert{r, fmt.Errorf("unreadable alert payload: %w", err)})
				continue
			}
			subject, text := alert.ComposeDisruption(m.cfg.PortalURL, alert.Disruption{
				Failing: p.Failing, Total: p.Total, Share: p.Share, Nodes: p.Nodes, At: p.At})
			groups = append(groups, group{rows: []nodes.Alert{r}, subject: subject, text: text})
		case health.AlertHook:
			var p nodes.HookPayload
			if err := json.Unmarshal(r.Payload, &p); err != nil {
				bad = append(bad, badAlert{r, fmt.Errorf("unreadable alert payload: %w", err)})
				continue
			}
			subject, text := alert.ComposeHookFailure(m.cfg.PortalURL, alert.HookFailure{
				Node: p.Node, Kind: p.Kind, Ref: p.Ref, WorkKind: p.WorkKind, Error: p.Error, Failures: int(p.Failures), At: p.At})
			groups = append(groups, group{rows: []nodes.Alert{r}, subject: subject, text: text, about: []string{p.Node}})
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
