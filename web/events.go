package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

type eventsView struct {
	Events []nodes.Event
	Filter nodes.EventFilter
	Nav    tableNav
	Nodes  []string // names for the node filter
	Err    string
}

func eventFilterFrom(r *http.Request) nodes.EventFilter {
	q := r.URL.Query()
	return nodes.EventFilter{Q: strings.TrimSpace(q.Get("q")), Node: strings.TrimSpace(q.Get("node")), Severity: q.Get("severity")}
}

func (h *Handler) eventsPage(w http.ResponseWriter, r *http.Request) error {
	f := eventFilterFrom(r)
	nav, p, err := pageFrom(r.URL.Query(), nodes.EventSorts)
	if err != nil {
		return errors.Join(errBadRequest, err)
	}
	nav.Path, nav.Target = "/events", "events"
	nav.Filters = map[string][]string{"q": {f.Q}, "node": {f.Node}, "severity": {f.Severity}}
	fetch := func(p nodes.Page) ([]nodes.Event, error) { return h.Nodes.EventPage(r.Context(), f, p) }
	if wantsCSV(r) {
		if _, err := fetch(nodes.Page{Sort: p.Sort, Limit: 1}); err != nil {
			return errors.Join(errBadRequest, err)
		}
		c := startCSV(w, "events", []string{"time", "severity", "node", "type", "message", "actor"})
		err := exportPages(p, fetch, nodes.Event.Cursor, func(e nodes.Event) {
			c.row(csvTime(e.At), e.Severity, e.NodeName, e.Type, e.Message, e.Actor)
		})
		return h.endCSV(r, c, err)
	}
	v := eventsView{Filter: f}
	rows, err := fetch(p)
	var fe problem.FieldErrors
	switch {
	case errors.As(err, &fe):
		v.Err = fe.Error()
	case err != nil:
		return err
	}
	v.Events = trim(&nav, rows, nodes.Event.Cursor)
	v.Nav = nav
	if isHTMX(r) {
		return h.render(w, r, "Events", "events", eventsTable(v))
	}
	all, err := h.Nodes.ListNodes(r.Context(), nodes.NodeFilter{})
	if err != nil {
		return err
	}
	for _, n := range all {
		v.Nodes = append(v.Nodes, n.Name)
	}
	return h.render(w, r, "Events", "events", eventsBody(v))
}

// endCSV finishes an export. Once rows are sent the status cannot change,
// so a failure midway is logged and cuts the file short.
func (h *Handler) endCSV(r *http.Request, c *csvExport, err error) error {
	if err == nil {
		err = c.close()
	} else {
		_ = c.close()
	}
	if err != nil {
		h.Log.Error("csv export cut short", "path", r.URL.Path, "err", err)
	}
	return nil
}
