package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
)

type workFilter struct {
	Q, Kind, State, Node string
}

func workFilterFrom(get func(string) string) workFilter {
	return workFilter{
		Q: strings.TrimSpace(get("q")), Kind: get("kind"), State: get("state"), Node: strings.TrimSpace(get("node")),
	}
}

func (f workFilter) query() string {
	v := url.Values{}
	for k, s := range map[string]string{"q": f.Q, "kind": f.Kind, "state": f.State, "node": f.Node} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

// workCell is one count of the work grid.
type workCell struct {
	N, Cost int64
}

type workView struct {
	Filter    workFilter
	Items     []dbsqlc.WorkListRow
	Counts    map[string]map[string]workCell // kind -> state -> count
	Nodes     []string
	CanChange bool
	FilterErr string

	// The place-work form.
	Form       workForm
	FormErrors nodes.FieldErrors
	FormNotice string
}

type workForm struct {
	Kind, Ref, Cost string
}

// liveStates are the work states the grid counts.
var liveStates = []string{nodes.WorkAssigned, nodes.WorkActive, nodes.WorkUnplaced}

func (h *Handler) workView(r *http.Request, f workFilter) (workView, error) {
	ctx := r.Context()
	v := workView{Filter: f, CanChange: canChange(r), Form: workForm{Kind: nodes.WorkCall, Cost: "1"}, Counts: map[string]map[string]workCell{}}
	counts, err := h.Nodes.WorkCounts(ctx)
	if err != nil {
		return v, err
	}
	for _, c := range counts {
		if v.Counts[c.Kind] == nil {
			v.Counts[c.Kind] = map[string]workCell{}
		}
		v.Counts[c.Kind][c.State] = workCell{N: c.N, Cost: c.Cost}
	}
	items, err := h.Nodes.ListWork(ctx, nodes.WorkFilter{Node: f.Node, Kind: f.Kind, State: f.State, Q: f.Q, Limit: 200})
	var fe nodes.FieldErrors
	switch {
	case errors.As(err, &fe):
		v.FilterErr = fe.Error()
	case errors.Is(err, nodes.ErrNotFound):
		v.FilterErr = fmt.Sprintf("no node is named %q", f.Node)
	case err != nil:
		return v, err
	}
	v.Items = items
	all, err := h.Nodes.ListNodes(ctx, dbsqlc.NodeListFilteredParams{})
	if err != nil {
		return v, err
	}
	for _, n := range all {
		v.Nodes = append(v.Nodes, n.Name)
	}
	return v, nil
}

func (h *Handler) workPage(w http.ResponseWriter, r *http.Request) error {
	v, err := h.workView(r, workFilterFrom(r.URL.Query().Get))
	if err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, "Work", "work", workLive(v))
	}
	return h.render(w, r, "Work", "work", workBody(v))
}

func (h *Handler) workCreate(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	form := workForm{Kind: r.PostFormValue("kind"), Ref: strings.TrimSpace(r.PostFormValue("ref")), Cost: strings.TrimSpace(r.PostFormValue("cost"))}
	fe := nodes.FieldErrors{}
	cost, cerr := strconv.Atoi(form.Cost)
	if cerr != nil {
		fe.Add("cost", "cost must be a whole number")
	}
	var p nodes.Placement
	var err error
	if len(fe) == 0 {
		p, err = h.Nodes.PlaceWork(r.Context(), actor(r), nodes.WorkInput{Kind: form.Kind, Ref: form.Ref, Cost: cost})
	} else {
		// Report every other field's problem too, not only the cost.
		for k, m := range nodes.ValidateWork(nodes.WorkInput{Kind: form.Kind, Ref: form.Ref, Cost: 1}) {
			fe.Add(k, m)
		}
	}
	var dfe nodes.FieldErrors
	switch {
	case errors.As(err, &dfe):
		fe = dfe
	case errors.Is(err, nodes.ErrConflict):
		fe.Add("ref", "a work item with this ref already exists")
	case err != nil:
		return err
	}
	if len(fe) == 0 {
		h.Nodes.Audit(r.Context(), actor(r), "work.place", p.Ref, fmt.Sprintf("kind=%s cost=%d state=%s node=%s", p.Kind, p.Cost, p.State, p.Node))
	}
	if len(fe) == 0 && !isHTMX(r) {
		http.Redirect(w, r, "/work", http.StatusSeeOther)
		return nil
	}
	v, verr := h.workView(r, workFilter{})
	if verr != nil {
		return verr
	}
	status := http.StatusOK
	if len(fe) > 0 {
		v.Form, v.FormErrors = form, fe
		status = http.StatusUnprocessableEntity
	} else {
		v.Form = workForm{Kind: form.Kind, Cost: form.Cost}
		if p.Node != "" {
			v.FormNotice = fmt.Sprintf("Placed %s %s on %s.", p.Kind, p.Ref, p.Node)
		} else {
			v.FormNotice = fmt.Sprintf("No node has room: %s %s waits unplaced and is placed when capacity returns.", p.Kind, p.Ref)
		}
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, "Work", "work", workPlaceForm(v))
	}
	return h.renderStatus(w, r, status, "Work", "work", workBody(v))
}

func (h *Handler) workEnd(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	ref, err := url.PathUnescape(chi.URLParam(r, "ref"))
	if err != nil {
		return errNotFound
	}
	wk, err := h.Nodes.EndWork(r.Context(), actor(r), ref)
	if err != nil {
		return err
	}
	h.Nodes.Audit(r.Context(), actor(r), "work.end", wk.Ref, "kind="+wk.Kind)
	if !isHTMX(r) {
		http.Redirect(w, r, "/work", http.StatusSeeOther)
		return nil
	}
	// The end button carries the page's filters, so the list keeps them.
	v, err := h.workView(r, workFilterFrom(r.PostFormValue))
	if err != nil {
		return err
	}
	return h.render(w, r, "Work", "work", workLive(v))
}

func workEndURL(ref string) string { return "/work/" + url.PathEscape(ref) + "/end" }
