package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

type workFilter struct {
	Q, Kind, State, Node string
}

func workFilterFrom(get func(string) string) workFilter {
	return workFilter{
		Q: strings.TrimSpace(get("q")), Kind: get("kind"), State: get("state"), Node: strings.TrimSpace(get("node")),
	}
}

func (f workFilter) values() url.Values {
	return url.Values{"q": {f.Q}, "kind": {f.Kind}, "state": {f.State}, "node": {f.Node}}
}

// workCell is one count of the work grid.
type workCell struct {
	N, Cost int64
}

type workView struct {
	Filter    workFilter
	Items     []nodes.Work
	Nav       tableNav
	Counts    map[string]map[string]workCell // kind -> state -> count
	Nodes     []string
	CanChange bool
	FilterErr string

	// The place-work form.
	Form       workForm
	FormErrors problem.FieldErrors
	FormNotice string
	FormWarn   string
}

type workForm struct {
	Kind, Ref, Cost string
}

// liveStates are the work states the grid counts.
var liveStates = []string{nodes.WorkAssigned, nodes.WorkActive, nodes.WorkUnplaced}

// workView reads the work page for the filters and table place in q.
func (h *Handler) workView(r *http.Request, q url.Values) (workView, error) {
	ctx := r.Context()
	f := workFilterFrom(q.Get)
	v := workView{Filter: f, CanChange: canChange(r), Form: workForm{Kind: nodes.WorkCall, Cost: "1"}, Counts: map[string]map[string]workCell{}}
	nav, p, err := pageFrom(q, nodes.WorkSorts)
	if err != nil {
		return v, errors.Join(errBadRequest, err)
	}
	nav.Path, nav.Target, nav.Filters = "/work", "work-live", f.values()
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
	items, err := h.Nodes.WorkPage(ctx, nodes.WorkFilter{Node: f.Node, Kind: f.Kind, State: f.State, Q: f.Q}, p)
	var fe problem.FieldErrors
	switch {
	case errors.As(err, &fe):
		v.FilterErr = fe.Error()
	case errors.Is(err, nodes.ErrNotFound):
		v.FilterErr = fmt.Sprintf("no node is named %q", f.Node)
	case err != nil:
		return v, err
	}
	v.Items = trim(&nav, items, nodes.Work.Cursor)
	v.Nav = nav
	all, err := h.Nodes.ListNodes(ctx, nodes.NodeFilter{})
	if err != nil {
		return v, err
	}
	for _, n := range all {
		v.Nodes = append(v.Nodes, n.Name)
	}
	return v, nil
}

func (h *Handler) workPage(w http.ResponseWriter, r *http.Request) error {
	if wantsCSV(r) {
		return h.workCSV(w, r)
	}
	v, err := h.workView(r, r.URL.Query())
	if err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, "Work", "work", workLive(v))
	}
	return h.render(w, r, "Work", "work", workBody(v))
}

// workCSV exports every work item of the filters and sort.
func (h *Handler) workCSV(w http.ResponseWriter, r *http.Request) error {
	f := workFilterFrom(r.URL.Query().Get)
	_, p, err := pageFrom(r.URL.Query(), nodes.WorkSorts)
	if err != nil {
		return errors.Join(errBadRequest, err)
	}
	wf := nodes.WorkFilter{Node: f.Node, Kind: f.Kind, State: f.State, Q: f.Q}
	fetch := func(p nodes.Page) ([]nodes.Work, error) { return h.Nodes.WorkPage(r.Context(), wf, p) }
	if _, err := fetch(nodes.Page{Sort: p.Sort, Limit: 1}); err != nil {
		if errors.Is(err, nodes.ErrNotFound) {
			return errors.Join(errBadRequest, fmt.Errorf("node: no node is named %q", f.Node))
		}
		return errors.Join(errBadRequest, err)
	}
	c := startCSV(w, "work", []string{"ref", "kind", "cost", "state", "node", "epoch", "created", "updated", "ended", "last_error"})
	err = exportPages(p, fetch, nodes.Work.Cursor, func(w nodes.Work) {
		ended := ""
		if w.EndedAt != nil {
			ended = csvTime(*w.EndedAt)
		}
		c.row(w.Ref, w.Kind, i64(int64(w.Cost)), w.State, w.NodeName, i64(w.Epoch), csvTime(w.CreatedAt), csvTime(w.UpdatedAt), ended, w.LastError)
	})
	return h.endCSV(r, c, err)
}

func (h *Handler) workCreate(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	form := workForm{Kind: r.PostFormValue("kind"), Ref: strings.TrimSpace(r.PostFormValue("ref")), Cost: strings.TrimSpace(r.PostFormValue("cost"))}
	fe := problem.FieldErrors{}
	cost, cerr := strconv.Atoi(form.Cost)
	if cerr != nil {
		fe.Add("cost", "cost must be a whole number")
	}
	var p nodes.Placement
	var err error
	if len(fe) == 0 {
		if nf := h.neverFits(r, form.Kind, cost); nf != nil {
			fe = nf
		}
	}
	if len(fe) == 0 {
		p, err = h.Nodes.PlaceWork(r.Context(), actor(r), nodes.WorkInput{Kind: form.Kind, Ref: form.Ref, Cost: cost})
	} else {
		// Report every other field's problem too, not only the cost.
		for k, m := range nodes.ValidateWork(nodes.WorkInput{Kind: form.Kind, Ref: form.Ref, Cost: 1}) {
			fe.Add(k, m)
		}
	}
	var dfe problem.FieldErrors
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
	v, verr := h.workView(r, url.Values{})
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
			// Not a success: the work is recorded but runs nowhere yet.
			v.FormWarn = fmt.Sprintf("Not placed: no eligible %s node has room for %s %s (cost %d). It waits unplaced and is placed when capacity returns.",
				nodeKindOf(p.Kind), p.Kind, p.Ref, p.Cost)
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
	// The end button carries the page's filters and place, so the list
	// keeps them.
	v, err := h.workView(r, r.PostForm)
	if err != nil {
		return err
	}
	return h.render(w, r, "Work", "work", workLive(v))
}

func workEndURL(ref string) string { return "/work/" + url.PathEscape(ref) + "/end" }

// neverFits refuses work that costs more than the largest node of its
// kind could ever carry: it would wait unplaced for ever. With no node of
// the kind registered yet, the work may wait for one.
func (h *Handler) neverFits(r *http.Request, workKind string, cost int) problem.FieldErrors {
	nk, ok := nodes.NodeKindFor(workKind)
	if !ok {
		return nil // ValidateWork names the kind
	}
	largest, err := h.Nodes.MaxCapacity(r.Context(), nk)
	if err != nil || largest == 0 || cost <= largest {
		return nil
	}
	return problem.FieldErrors{"cost": fmt.Sprintf("cost %d is more than the largest %s node can carry (capacity %d): it could never be placed", cost, nk, largest)}
}

func nodeKindOf(workKind string) string {
	nk, _ := nodes.NodeKindFor(workKind)
	return nk
}
