package web

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/web/layout"
)

// checkerShell reads the health checker's status for the page frame. A
// failed read shows nothing rather than failing the page.
func (h *Handler) checkerShell(ctx context.Context) layout.Checker {
	if h.Settings == nil {
		return layout.Checker{}
	}
	st, err := h.Settings.Status(ctx)
	if err != nil {
		h.Log.Warn("read health checker status", "err", err)
		return layout.Checker{}
	}
	return checkerView(st)
}

func checkerView(st health.Status) layout.Checker {
	c := layout.Checker{Known: true, LastRound: "none yet", Stalled: st.Stalled, StallAfter: st.StallAfter.String()}
	if age := st.LastRoundAge(); age >= 0 {
		c.LastRound = age.Round(time.Second).String() + " ago"
	}
	if d := st.Disruption; d.Held() {
		c.Disruption = fmt.Sprintf("Disruption since %s: %d of %d nodes failing at once (%s). Automatic failover and per-node alerts are held until it clears or an administrator confirms.",
			d.Since.UTC().Format("15:04:05 MST"), d.Failing, d.Total, d.Nodes)
	}
	return c
}

// disruptionConfirm lets failover proceed during a disruption (admin).
func (h *Handler) disruptionConfirm(w http.ResponseWriter, r *http.Request) error {
	d, err := h.Nodes.ConfirmDisruption(r.Context(), actor(r))
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	st, lerr := h.Settings.Load(r.Context())
	if lerr != nil {
		return lerr
	}
	v, verr := h.settingsView(r, st)
	if verr != nil {
		return verr
	}
	if fe != nil {
		v.Alert = fe["disruption"]
	} else {
		v.Notice = fmt.Sprintf("Disruption confirmed: automatic failover and alerts proceed for the %d failing nodes.", d.Failing)
	}
	return h.renderStatus(w, r, status, "Settings", "settings", settingsBody(v))
}
