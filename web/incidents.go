package web

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

// incidentLimit bounds the failing nodes read for the banner and the
// dashboard: past it they say how many more there are.
const incidentLimit = 50

// bannerShown is how many failing nodes the banner names.
const bannerShown = 4

// incident is one failing node as the banner and the dashboard show it.
type incident struct {
	Node   nodes.Incident
	Policy string
}

// Since is how long the node has been failing.
func (i incident) Since() string { return since(i.Node.HealthChangedAt) }

// For says it in words: "for 5m", or "just now".
func (i incident) For() string {
	if s := i.Since(); s != "just now" {
		return "for " + s
	}
	return "just now"
}

// Cause is the last probe's verdict.
func (i incident) Cause() string { return dash(i.Node.LastProbeDetail) }

// Affected says what the failure does to the node's work.
func (i incident) Affected() string {
	n := i.Node
	wk := nodes.WorkKindFor(n.Kind)
	if n.Items == 0 {
		return "no work on it"
	}
	work := nodes.WorkNoun(wk, n.Items) + fmt.Sprintf(" (%d units)", n.Units)
	switch {
	case n.Health == nodes.HealthSuspect:
		return work + " on it; it takes no new work while suspect"
	case n.InMaintenance(time.Now()):
		return work + " stay on it (maintenance: no automatic failover)"
	case i.Policy == settings.PolicyAuto:
		return work + " still on it: automatic failover moves them when there is room"
	}
	return work + " stay on it until it is disabled (manual failover)"
}

// Todo is the next step for the operator.
func (i incident) Todo() string {
	n := i.Node
	switch {
	case n.Health == nodes.HealthSuspect:
		return "Watch it: it goes down after more failed checks. Check the service on the host."
	case n.Items > 0 && i.Policy != settings.PolicyAuto && !n.InMaintenance(time.Now()):
		return "Disable the node to move its work, then fix the service on the host."
	}
	return "Check the node's service and agent on its host; it is used again once its checks pass."
}

// waiting is work of one kind that waits unplaced.
type waiting struct {
	Kind  string
	Items int64
}

type incidentsView struct {
	Incidents []incident
	Waiting   []waiting
}

// Any reports whether there is anything to show.
func (v incidentsView) Any() bool { return len(v.Incidents) > 0 || len(v.Waiting) > 0 }

// Shown are the incidents the banner names; More how many it does not.
func (v incidentsView) Shown() []incident { return v.Incidents[:min(len(v.Incidents), bannerShown)] }
func (v incidentsView) More() int         { return max(len(v.Incidents)-bannerShown, 0) }

// Headline sums the incidents up in a few words.
func (v incidentsView) Headline() string {
	down, suspect := 0, 0
	for _, i := range v.Incidents {
		if i.Node.Health == nodes.HealthDown {
			down++
		} else {
			suspect++
		}
	}
	switch {
	case down > 0 && suspect > 0:
		return fmt.Sprintf("%s down, %d suspect", plural(int64(down), "node"), suspect)
	case down > 0:
		return plural(int64(down), "node") + " down"
	case suspect > 0:
		return plural(int64(suspect), "node") + " suspect"
	}
	return "Work waiting"
}

// Level is the banner's colour: critical when a node is down.
func (v incidentsView) Level() string {
	for _, i := range v.Incidents {
		if i.Node.Health == nodes.HealthDown {
			return "critical"
		}
	}
	return "warning"
}

func (h *Handler) incidentsView(ctx context.Context) (incidentsView, error) {
	rows, err := h.Nodes.Incidents(ctx, incidentLimit)
	if err != nil {
		return incidentsView{}, err
	}
	st := settings.Builtin()
	if h.Settings != nil {
		if s, err := h.Settings.Load(ctx); err == nil {
			st = s
		}
	}
	var v incidentsView
	for _, n := range rows {
		v.Incidents = append(v.Incidents, incident{Node: n, Policy: st.PolicyFor(n.Kind)})
	}
	counts, err := h.Nodes.WorkCounts(ctx)
	if err != nil {
		return v, err
	}
	for _, c := range counts {
		if c.State == nodes.WorkUnplaced && c.N > 0 {
			v.Waiting = append(v.Waiting, waiting{Kind: c.Kind, Items: c.N})
		}
	}
	return v, nil
}

// incidentBanner is the banner of every signed-in page: the failing nodes
// and the waiting work, or an empty region that keeps polling.
func (h *Handler) incidentBanner(r *http.Request) *incidentsView {
	v, err := h.incidentsView(r.Context())
	if err != nil {
		h.Log.Warn("read incidents for the banner", "err", err)
		return nil
	}
	return &v
}

// incidentsPart answers the banner's poll.
func (h *Handler) incidentsPart(w http.ResponseWriter, r *http.Request) error {
	v, err := h.incidentsView(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	return incidentBanner(v).Render(r.Context(), w)
}
