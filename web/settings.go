package web

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/alert"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/settings"
)

// SettingsStore is what the settings page needs: the health and alert
// settings, the test email and the state of the alert outbox
// (*health.Store implements it).
type SettingsStore interface {
	Load(ctx context.Context) (settings.Settings, error)
	// Save validates and stores the form; invalid input returns
	// problem.FieldErrors and saves nothing.
	Save(ctx context.Context, actor nodes.Actor, form map[string]string) (settings.Settings, error)
	// SaveSIP validates and stores the SIP front door's settings; invalid
	// input returns problem.FieldErrors and saves nothing.
	SaveSIP(ctx context.Context, actor nodes.Actor, form map[string]string) (settings.SIP, error)
	// SendTest sends the test email and audits it; it returns the SMTP
	// server's reply or why nothing was sent.
	SendTest(ctx context.Context, actor nodes.Actor) (settings.TestEmail, error)
	// Retention is how long each history is kept.
	Retention(ctx context.Context) (settings.Retention, error)
	// SaveRetention validates and stores the retention periods with an
	// audit row; invalid input returns problem.FieldErrors and saves
	// nothing.
	SaveRetention(ctx context.Context, actor nodes.Actor, form map[string]string) (settings.Retention, error)
	// Status is the health checker's last round and the disruption guard.
	Status(ctx context.Context) (health.Status, error)
}

type settingsView struct {
	Values    map[string]string // as shown: the SMTP URL redacted
	Errors    map[string]string
	CanEdit   bool
	Notice    string
	Alert     string
	MailReady bool
	Outbox    nodes.OutboxStatus
	Instance  string
	Leader    string
	Test      testEmailResult
	Checker   health.Status
	Retention retentionView
}

type testEmailResult struct {
	Done  bool
	OK    bool
	Reply string
}

func (h *Handler) settingsView(r *http.Request, st settings.Settings) (settingsView, error) {
	ctx := r.Context()
	v := settingsView{Values: st.Values(), Errors: map[string]string{}, CanEdit: canChange(r), MailReady: st.MailReady()}
	v.Values[settings.KeySMTPURL] = st.SMTPRedacted()
	var err error
	if v.Outbox, err = h.Nodes.OutboxStatus(ctx); err != nil {
		return v, err
	}
	if v.Retention, err = h.retentionView(r); err != nil {
		return v, err
	}
	if h.Cluster != nil {
		v.Instance, v.Leader = h.Cluster.InstanceID(), h.Cluster.LeaderID(ctx)
	}
	if v.Checker, err = h.Settings.Status(ctx); err != nil {
		return v, err
	}
	return v, nil
}

func (h *Handler) settingsPage(w http.ResponseWriter, r *http.Request) error {
	st, err := h.Settings.Load(r.Context())
	if err != nil {
		return err
	}
	v, err := h.settingsView(r, st)
	if err != nil {
		return err
	}
	if isHTMX(r) {
		// The page polls its live region: the outbox and the leader.
		return h.render(w, r, "Settings", "settings", settingsLive(v))
	}
	return h.render(w, r, "Settings", "settings", settingsBody(v))
}

func (h *Handler) settingsSave(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	form := map[string]string{}
	for _, k := range settings.Keys() {
		// A setting the form does not name keeps its value (Save).
		if _, named := r.PostForm[k]; named || !settings.Optional(k) {
			form[k] = r.PostFormValue(k)
		}
	}
	ctx := r.Context()
	st, err := h.Settings.Save(ctx, actor(r), form)
	var fe problem.FieldErrors
	switch {
	case errors.As(err, &fe):
		h.Nodes.AuditFailure(ctx, actor(r), "settings.update", "settings", fe)
		cur, lerr := h.Settings.Load(ctx)
		if lerr != nil {
			return lerr
		}
		v, verr := h.settingsView(r, cur)
		if verr != nil {
			return verr
		}
		v.Values = form
		v.Values[settings.KeySMTPURL] = shownSMTPURL(form[settings.KeySMTPURL])
		v.Errors = fe
		v.Alert = "The settings were not saved: correct the fields marked below."
		return h.renderStatus(w, r, http.StatusUnprocessableEntity, "Settings", "settings", settingsBody(v))
	case err != nil:
		return err
	}
	v, err := h.settingsView(r, st)
	if err != nil {
		return err
	}
	v.Notice = "Settings saved. Every call manager uses them within a few seconds."
	return h.render(w, r, "Settings", "settings", settingsBody(v))
}

// shownSMTPURL is what the form shows of a submitted SMTP URL: never a
// password, even the one the administrator just typed.
func shownSMTPURL(raw string) string {
	if cfg, err := alert.ParseSMTPURL(raw); err == nil {
		return cfg.Redacted()
	}
	if strings.Contains(raw, "@") {
		return ""
	}
	return raw
}

func (h *Handler) settingsTestEmail(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	sent, err := h.Settings.SendTest(ctx, actor(r))
	if err != nil {
		return err
	}
	res := testEmailResult{Done: true, OK: sent.OK, Reply: sent.Reply}
	if isHTMX(r) {
		return h.render(w, r, "Settings", "settings", testEmailPartial(res))
	}
	st, err := h.Settings.Load(ctx)
	if err != nil {
		return err
	}
	v, err := h.settingsView(r, st)
	if err != nil {
		return err
	}
	v.Test = res
	return h.render(w, r, "Settings", "settings", settingsBody(v))
}
