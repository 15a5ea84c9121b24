package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

type auditView struct {
	Rows   []nodes.AuditEntry
	Q      string
	Result string
	Nav    tableNav
	Err    string
}

func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request) error {
	v := auditView{Q: strings.TrimSpace(r.URL.Query().Get("q")), Result: r.URL.Query().Get("result")}
	nav, p, err := pageFrom(r.URL.Query(), nodes.AuditSorts)
	if err != nil {
		return errors.Join(errBadRequest, err)
	}
	nav.Path, nav.Target = "/audit", "audit"
	nav.Filters = map[string][]string{"q": {v.Q}, "result": {v.Result}}
	fetch := func(p nodes.Page) ([]nodes.AuditEntry, error) {
		return h.Nodes.AuditPage(r.Context(), nodes.AuditFilter{Q: v.Q, Result: v.Result}, p)
	}
	if wantsCSV(r) {
		if _, err := fetch(nodes.Page{Sort: p.Sort, Limit: 1}); err != nil {
			return errors.Join(errBadRequest, err)
		}
		c := startCSV(w, "audit", []string{"time", "actor", "action", "target", "result", "source", "detail"})
		err := exportPages(p, fetch, nodes.AuditEntry.Cursor, func(a nodes.AuditEntry) {
			c.row(csvTime(a.At), a.Actor, a.Action, a.Target, a.Result, a.SourceAddr, a.Detail)
		})
		return h.endCSV(r, c, err)
	}
	rows, err := fetch(p)
	var fe problem.FieldErrors
	switch {
	case errors.As(err, &fe):
		v.Err = fe.Error()
	case err != nil:
		return err
	}
	v.Rows = trim(&nav, rows, nodes.AuditEntry.Cursor)
	v.Nav = nav
	if isHTMX(r) {
		return h.render(w, r, "Audit", "audit", auditTable(v))
	}
	return h.render(w, r, "Audit", "audit", auditBody(v))
}
