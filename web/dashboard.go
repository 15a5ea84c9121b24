package web

import (
	"net/http"
	"time"

	"github.com/callplane/callplane/nodes"
)

// kindCard is the dashboard's summary of one node kind.
type kindCard struct {
	Kind     string
	Nodes    nodes.KindSummary
	Total    int32
	Unplaced int64 // waiting work items of the kind's work kind
	Live     int64 // placed work items (assigned or active)
}

type dashboardView struct {
	Kinds     []kindCard
	Events    []nodes.Event
	Leader    string
	Instance  string
	Incidents incidentsView
	WorkNow   chart
	WorkTrend chart
}

func (h *Handler) dashboardView(r *http.Request) (dashboardView, error) {
	ctx := r.Context()
	summary, err := h.Nodes.KindSummary(ctx)
	if err != nil {
		return dashboardView{}, err
	}
	counts, err := h.Nodes.WorkCounts(ctx)
	if err != nil {
		return dashboardView{}, err
	}
	events, err := h.Nodes.ListEvents(ctx, "", "", 15)
	if err != nil {
		return dashboardView{}, err
	}
	v := dashboardView{Events: events}
	if v.Incidents, err = h.incidentsView(ctx); err != nil {
		return v, err
	}
	trend, err := h.Nodes.KindHistory(ctx, loadWindow)
	if err != nil {
		return v, err
	}
	placed, waiting := map[string]workCell{}, map[string]int64{}
	for _, c := range counts {
		if c.State == nodes.WorkUnplaced {
			waiting[c.Kind] += c.N
			continue
		}
		pc := placed[c.Kind]
		pc.N, pc.Cost = pc.N+c.N, pc.Cost+c.Cost
		placed[c.Kind] = pc
	}
	v.WorkNow = kindNowChart(placed, waiting)
	v.WorkTrend = kindTrendChart(trend, placed, time.Now())
	if h.Cluster != nil {
		v.Leader, v.Instance = h.Cluster.LeaderID(ctx), h.Cluster.InstanceID()
	}
	// Every kind gets a card, even with no nodes, so an empty pool shows.
	for _, k := range nodes.Kinds {
		c := kindCard{Kind: k, Nodes: nodes.KindSummary{Kind: k}}
		for _, s := range summary {
			if s.Kind == k {
				c.Nodes = s
			}
		}
		n := c.Nodes
		c.Total = n.Up + n.Suspect + n.Down + n.Pending + n.Disabled
		wk := nodes.WorkKindFor(k)
		for _, wc := range counts {
			if wc.Kind != wk {
				continue
			}
			if wc.State == nodes.WorkUnplaced {
				c.Unplaced += wc.N
			} else {
				c.Live += wc.N
			}
		}
		v.Kinds = append(v.Kinds, c)
	}
	return v, nil
}

func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request) error {
	v, err := h.dashboardView(r)
	if err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, "Dashboard", "dashboard", dashboardLive(v))
	}
	return h.render(w, r, "Dashboard", "dashboard", dashboardBody(v))
}
