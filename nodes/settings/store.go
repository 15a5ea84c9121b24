package settings

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/alert"
)

// Store loads and saves Settings. Loads are cached briefly, so every
// instance sees a save within CacheTTL without a query per use.
type Store struct {
	pool      *pgxpool.Pool
	log       *slog.Logger
	base      map[string]string // built-in values overlaid with Defaults
	portalURL string

	// CacheTTL is how long a load is reused.
	CacheTTL time.Duration

	mu       sync.Mutex
	cached   Settings
	cachedAt time.Time
}

// NewStore returns a Store whose unsaved settings come from d. portalURL
// is the portal's base URL, for links in test emails.
func NewStore(pool *pgxpool.Pool, d Defaults, portalURL string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := Builtin().Values()
	overlay := map[string]string{KeySMTPURL: d.SMTPURL, KeyAlertFrom: d.AlertFrom, KeyAlertTo: d.AlertTo}
	if _, fe := Parse(merge(base, overlay)); len(fe) > 0 {
		// Keep the good parts of the command line; say what was wrong
		// without echoing the SMTP URL, which may hold a password.
		for k := range fe {
			log.Warn("alert setting from the command line is invalid and ignored", "setting", k, "problem", fe[k])
			delete(overlay, k)
		}
	}
	return &Store{pool: pool, log: log, base: merge(base, overlay), portalURL: portalURL, CacheTTL: 2 * time.Second}
}

func merge(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// Load returns the effective settings: defaults overridden by the rows
// saved in the portal.
func (s *Store) Load(ctx context.Context) (Settings, error) {
	s.mu.Lock()
	if !s.cachedAt.IsZero() && time.Since(s.cachedAt) < s.CacheTTL {
		st := s.cached
		s.mu.Unlock()
		return st, nil
	}
	s.mu.Unlock()
	st, err := s.load(ctx)
	if err != nil {
		return st, err
	}
	s.mu.Lock()
	s.cached, s.cachedAt = st, time.Now()
	s.mu.Unlock()
	return st, nil
}

func (s *Store) load(ctx context.Context) (Settings, error) {
	rows, err := db.Q.SettingList(ctx, s.pool)
	if err != nil {
		return Settings{}, fmt.Errorf("load settings: %w", err)
	}
	v := maps.Clone(s.base)
	for _, r := range rows {
		if _, known := v[r.Key]; known {
			v[r.Key] = r.Value
		}
	}
	st, fe := Parse(v)
	if len(fe) > 0 {
		// A stored value that no longer validates falls back to its
		// default rather than stopping the checker.
		for k := range fe {
			s.log.Warn("saved setting is invalid; using its default", "setting", k, "problem", fe[k])
			v[k] = s.base[k]
		}
		st, _ = Parse(v)
	}
	return st, nil
}

// Invalidate drops the cached settings so the next Load reads them.
func (s *Store) Invalidate() {
	s.mu.Lock()
	s.cachedAt = time.Time{}
	s.mu.Unlock()
}

// Save validates form and stores every setting, with an audit row, in one
// transaction. When the SMTP URL comes back as shown (with its password
// redacted) the stored password is kept. Invalid input returns
// problem.FieldErrors and saves nothing.
func (s *Store) Save(ctx context.Context, actor nodes.Actor, form map[string]string) (Settings, error) {
	cur, err := s.load(ctx)
	if err != nil {
		return Settings{}, err
	}
	in := maps.Clone(form)
	// Settings added after a client was written keep their value when the
	// form does not name them.
	for _, k := range Keys() {
		if _, ok := in[k]; !ok && Optional(k) {
			in[k] = cur.Values()[k]
		}
	}
	if strings.TrimSpace(in[KeySMTPURL]) != "" && strings.TrimSpace(in[KeySMTPURL]) == cur.SMTPRedacted() {
		in[KeySMTPURL] = cur.SMTPURL
	}
	st, fe := Parse(in)
	if len(fe) > 0 {
		return st, fe
	}
	oldV, newV := cur.Values(), st.Values()
	var changes []string
	for _, k := range Keys() {
		if oldV[k] == newV[k] {
			continue
		}
		if k == KeySMTPURL {
			changes = append(changes, fmt.Sprintf("%s: %q -> %q", k, cur.SMTPRedacted(), st.SMTPRedacted()))
			continue
		}
		changes = append(changes, fmt.Sprintf("%s: %q -> %q", k, oldV[k], newV[k]))
	}
	detail := strings.Join(changes, "; ")
	if detail == "" {
		detail = "no change"
	}
	if err := s.write(ctx, actor, Keys(), newV, "settings.update", "settings", detail); err != nil {
		return Settings{}, err
	}
	s.Invalidate()
	return st, nil
}

// ErrNoSMTP: no SMTP server, sender or recipient is configured.
var ErrNoSMTP = errors.New("alert email is not configured: set the SMTP URL, the sender and the recipients first")

// TestEmailTimeout bounds the test email, which the portal waits for.
const TestEmailTimeout = 15 * time.Second

// TestEmail is the outcome of a test email: the SMTP server's reply to
// the message, or why it was not sent.
type TestEmail struct {
	OK    bool
	Reply string
}

// SendTest sends the test email with the saved settings on behalf of
// actor and audits the attempt (settings.test_email, with the reply or
// the failure). It fails only when the audit row cannot be written.
func (s *Store) SendTest(ctx context.Context, actor nodes.Actor) (TestEmail, error) {
	reply, err := s.sendTest(ctx)
	res := TestEmail{OK: err == nil, Reply: reply}
	row := auditRow(actor, "settings.test_email", "settings", reply)
	if err != nil {
		res.Reply = err.Error()
		row.Result, row.Detail = "error", err.Error()
	}
	if err := db.Q.AuditInsert(ctx, s.pool, row); err != nil {
		return res, fmt.Errorf("audit the test email: %w", err)
	}
	return res, nil
}

func (s *Store) sendTest(ctx context.Context) (string, error) {
	st, err := s.load(ctx)
	if err != nil {
		return "", err
	}
	cfg, ok := st.SMTP()
	if !ok || !st.MailReady() {
		return "", ErrNoSMTP
	}
	subject, text := alert.ComposeTest(s.portalURL)
	return alert.NewSender(cfg, TestEmailTimeout).Send(ctx, alert.Message{
		From: st.AlertFrom, To: st.Recipients(), Subject: subject, Text: text,
	})
}

// SaveSIP validates the SIP front door's settings in form (keys SIPKeys;
// an empty value means the default) and stores them with an audit row, in
// one transaction. Invalid input returns problem.FieldErrors and saves
// nothing. Every instance's front door reads them within seconds.
func (s *Store) SaveSIP(ctx context.Context, actor nodes.Actor, form map[string]string) (SIP, error) {
	st, fe := ParseSIP(form)
	if err := fe.Err(); err != nil {
		return st, err
	}
	values := map[string]string{}
	for _, k := range SIPKeys() {
		values[k] = form[k]
	}
	if err := s.write(ctx, actor, SIPKeys(), values, "sip.settings", "sip", fmt.Sprint(values)); err != nil {
		return SIP{}, err
	}
	return st, nil
}

// write stores values of keys (in that order) with an audit row of the
// change, in one transaction under the database retry policy.
func (s *Store) write(ctx context.Context, actor nodes.Actor, keys []string, values map[string]string, action, target, detail string) error {
	return db.InTxRetry(ctx, s.pool, func(tx pgx.Tx) error {
		for _, k := range keys {
			if err := db.Q.SettingUpsert(ctx, tx, dbsqlc.SettingUpsertParams{Key: k, Value: values[k], UpdatedBy: actor.Name}); err != nil {
				return fmt.Errorf("save setting %s: %w", k, err)
			}
		}
		return db.Q.AuditInsert(ctx, tx, auditRow(actor, action, target, detail))
	})
}

// auditRow is a successful change's audit row by actor.
func auditRow(actor nodes.Actor, action, target, detail string) dbsqlc.AuditInsertParams {
	return dbsqlc.AuditInsertParams{Actor: actor.Name, Action: action, Target: target, Result: "ok", SourceAddr: actor.Addr, Detail: detail}
}
