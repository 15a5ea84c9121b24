package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/callplane/callplane/db/dbsqlc"
)

type eventsView struct {
	Events []dbsqlc.Event
	Q      string
	Node   string
	Nodes  []string // names for the node filter
}

func (v eventsView) query() string {
	q := url.Values{}
	if v.Q != "" {
		q.Set("q", v.Q)
	}
	if v.Node != "" {
		q.Set("node", v.Node)
	}
	return q.Encode()
}

func (h *Handler) eventsPage(w http.ResponseWriter, r *http.Request) error {
	v := eventsView{Q: strings.TrimSpace(r.URL.Query().Get("q")), Node: strings.TrimSpace(r.URL.Query().Get("node"))}
	var err error
	if v.Events, err = h.Nodes.ListEvents(r.Context(), v.Node, v.Q, 300); err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, "Events", "events", eventsTable(v))
	}
	all, err := h.Nodes.ListNodes(r.Context(), dbsqlc.NodeListFilteredParams{})
	if err != nil {
		return err
	}
	for _, n := range all {
		v.Nodes = append(v.Nodes, n.Name)
	}
	return h.render(w, r, "Events", "events", eventsBody(v))
}
