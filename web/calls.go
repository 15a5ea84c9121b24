package web

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/nodes/sipfront"
)

// SIPFront is what the Calls view shows of this instance's SIP front
// door; nil when it is turned off.
type SIPFront interface {
	Addr() string
	Public() string
	Settings() settings.SIP
	Stats() *sipfront.Counters
}

// callsWindow is the span the failure causes are counted over.
const callsWindow = time.Hour

type callsView struct {
	Enabled   bool
	Listen    string
	Public    string
	Stats     nodes.CallStats
	PerSecond string
	Instance  struct{ Invites, Answered, Failed, Failovers, InDialog int64 }
	Settings  map[string]string
	Errors    map[string]string
	Notice    string
	CanChange bool
}

func (h *Handler) callsView(r *http.Request) (callsView, error) {
	v := callsView{CanChange: canChange(r), Errors: map[string]string{}}
	st, err := h.Nodes.CallStats(r.Context(), callsWindow)
	if err != nil {
		return v, err
	}
	v.Stats = st
	v.PerSecond = fmt.Sprintf("%.2f", float64(st.Recent.Calls)/st.RateSpan.Seconds())
	stored, err := h.Nodes.CallSettings(r.Context())
	if err != nil {
		return v, err
	}
	cur, _ := settings.ParseSIP(stored)
	v.Settings = cur.Values()
	if h.SIP != nil {
		v.Enabled, v.Listen, v.Public = true, h.SIP.Addr(), h.SIP.Public()
		c := h.SIP.Stats()
		v.Instance.Invites, v.Instance.Answered, v.Instance.Failed = c.Invites.Load(), c.Answered.Load(), c.Failed.Load()
		v.Instance.Failovers, v.Instance.InDialog = c.Failovers.Load(), c.InDialog.Load()
	}
	return v, nil
}

func (h *Handler) callsPage(w http.ResponseWriter, r *http.Request) error {
	v, err := h.callsView(r)
	if err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, "Calls", "calls", callsLive(v))
	}
	return h.render(w, r, "Calls", "calls", callsBody(v))
}

// callsSettingsSave stores the front door's settings; every instance
// picks them up within seconds.
func (h *Handler) callsSettingsSave(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	// A field left empty takes its default, shown as such.
	form := map[string]string{}
	for _, k := range settings.SIPKeys() {
		form[k] = strings.TrimSpace(r.PostFormValue(k))
		if form[k] == "" {
			form[k] = settings.DefaultSIP().Values()[k]
		}
	}
	ctx := r.Context()
	_, err := h.Settings.SaveSIP(ctx, actor(r), form)
	fe, status, err := formOutcome(err)
	switch {
	case err != nil:
		return err
	case fe != nil:
		h.Nodes.AuditFailure(ctx, actor(r), "sip.settings", "sip", fe)
	case !isHTMX(r):
		http.Redirect(w, r, "/calls", http.StatusSeeOther)
		return nil
	}
	v, err := h.callsView(r)
	if err != nil {
		return err
	}
	v.Settings, v.Errors = form, fe
	if fe == nil {
		v.Notice = "Saved. Every call manager instance applies the new settings within 10 seconds."
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, "Calls", "calls", callsSettingsForm(v))
	}
	return h.renderStatus(w, r, status, "Calls", "calls", callsBody(v))
}

// causeKind names a row of the failure table for people.
func causeKind(kind string) string {
	switch kind {
	case "call":
		return "call failed"
	case "try":
		return "try failed over"
	case "ended":
		return "call ended"
	}
	return kind
}
