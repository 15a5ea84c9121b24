package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// joinStateDir is where the agent keeps its credential on a node's host.
const joinStateDir = "/var/lib/callplane-agent"

// maintLayout is the layout of an HTML datetime-local input; the portal
// shows and takes every time in UTC.
const maintLayout = "2006-01-02T15:04"

// ttlChoices are the join token lifetimes the portal offers.
var ttlChoices = []struct{ Value, Label string }{
	{"15m", "15 minutes"}, {"1h", "1 hour"}, {"24h", "24 hours"}, {"168h", "7 days"},
}

// nodesPerPage bounds the rows of the live node table: a cluster of
// hundreds of nodes is read through filters and pages, and a smaller
// table keeps the every-2s refresh cheap for the browser and the server.
const nodesPerPage = 100

type nodeFilter struct {
	Kind, State, Health, Q string
	Page                   int
}

func nodeFilterFrom(r *http.Request) nodeFilter {
	q := r.URL.Query()
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page < 1 {
		page = 1
	}
	return nodeFilter{
		Kind: q.Get("kind"), State: q.Get("state"), Health: q.Get("health"),
		Q: strings.TrimSpace(q.Get("q")), Page: page,
	}
}

func (f nodeFilter) withPage(p int) nodeFilter {
	f.Page = p
	return f
}

// filtered reports whether any filter (not the page) is set.
func (f nodeFilter) filtered() bool {
	return f.Kind != "" || f.State != "" || f.Health != "" || f.Q != ""
}

// query is the filter as a query string, so the live table keeps it.
func (f nodeFilter) query() string {
	v := url.Values{}
	for k, s := range map[string]string{"kind": f.Kind, "state": f.State, "health": f.Health, "q": f.Q} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if f.Page > 1 {
		v.Set("page", strconv.Itoa(f.Page))
	}
	return v.Encode()
}

type nodesView struct {
	Nodes     []nodes.Node // this page's rows
	Total     int
	Pages     int
	Filter    nodeFilter
	CanChange bool
}

// From and To number the rows shown, from 1.
func (v nodesView) From() int { return min((v.Filter.Page-1)*nodesPerPage+1, v.Total) }
func (v nodesView) To() int   { return (v.Filter.Page-1)*nodesPerPage + len(v.Nodes) }

func (h *Handler) nodesPage(w http.ResponseWriter, r *http.Request) error {
	f := nodeFilterFrom(r)
	filter := nodes.NodeFilter{Kind: f.Kind, AdminState: f.State, Health: f.Health, Q: f.Q}
	// Only the page's rows are read (the live table polls this).
	list, total, err := h.Nodes.ListNodesPage(r.Context(), filter, (f.Page-1)*nodesPerPage, nodesPerPage)
	if err != nil {
		return err
	}
	pages := max((total+nodesPerPage-1)/nodesPerPage, 1)
	f.Page = min(f.Page, pages) // past the last page, the last was read
	v := nodesView{Nodes: list, Total: total, Pages: pages, Filter: f, CanChange: canChange(r)}
	if isHTMX(r) {
		return h.render(w, r, "Nodes", "nodes", nodesTable(v))
	}
	return h.render(w, r, "Nodes", "nodes", nodesBody(v))
}

type nodeFormView struct {
	Editing bool
	Name    string // the node being edited
	In      nodes.NodeInput
	Errors  problem.FieldErrors
}

func nodeInputFrom(r *http.Request) nodes.NodeInput {
	return nodes.NodeInput{
		Name: strings.TrimSpace(r.PostFormValue("name")), Kind: r.PostFormValue("kind"),
		Address: r.PostFormValue("address"), Capacity: r.PostFormValue("capacity"),
		Weight: r.PostFormValue("weight"), Region: r.PostFormValue("region"),
		Description: r.PostFormValue("description"),
	}
}

func (h *Handler) nodeNewForm(w http.ResponseWriter, r *http.Request) error {
	v := nodeFormView{In: nodes.NodeInput{Kind: nodes.KindMedia, Weight: itoa(nodes.DefaultWeight)}}
	return h.render(w, r, "Register node", "nodes", nodeForm(v))
}

func (h *Handler) nodeCreate(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	in := nodeInputFrom(r)
	n, err := h.Nodes.AddNode(r.Context(), actor(r), in)
	var fe problem.FieldErrors
	if errors.As(err, &fe) {
		return h.renderStatus(w, r, http.StatusUnprocessableEntity, "Register node", "nodes", nodeForm(nodeFormView{In: in, Errors: fe}))
	}
	if err != nil {
		return err
	}
	return redirect(w, r, nodeURL(n.Name))
}

func (h *Handler) nodeEditForm(w http.ResponseWriter, r *http.Request) error {
	n, err := h.Nodes.GetNode(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	v := nodeFormView{Editing: true, Name: n.Name, In: nodes.NodeInput{
		Name: n.Name, Kind: n.Kind, Address: n.Address, Capacity: i64(int64(n.Capacity)),
		Weight: i64(int64(n.Weight)), Region: n.Region, Description: n.Description,
	}}
	return h.render(w, r, "Edit "+n.Name, "nodes", nodeForm(v))
}

func (h *Handler) nodeUpdate(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	old, err := h.Nodes.GetNode(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	in := nodeInputFrom(r)
	in.Name, in.Kind = old.Name, old.Kind
	n, err := h.Nodes.UpdateNode(r.Context(), actor(r), old.Name, in)
	var fe problem.FieldErrors
	if errors.As(err, &fe) {
		v := nodeFormView{Editing: true, Name: old.Name, In: in, Errors: fe}
		return h.renderStatus(w, r, http.StatusUnprocessableEntity, "Edit "+old.Name, "nodes", nodeForm(v))
	}
	if err != nil {
		return err
	}
	return redirect(w, r, nodeURL(n.Name))
}

// nodeView is everything the node page shows. The form states (Join,
// Maint*, CredNotice) are filled by the POST handlers that re-render the
// page or one of its parts.
type nodeView struct {
	Node      nodes.Node
	Carrying  []nodes.KindCount
	Work      []nodes.Work
	Probes    []nodes.ProbeResult
	Events    []nodes.Event
	CanChange bool

	Join        *nodes.JoinToken
	JoinCommand string
	JoinTTL     string
	JoinErr     string
	JoinReplace bool // the form asked to replace an enrolled agent

	// What is wrong and what to do, and the pictures of the node's
	// history.
	Diagnosis diagnosis
	Latency   chart
	Success   chart
	Load      chart
	Uptime    []nodesUptime

	MaintStart  string
	MaintUntil  string
	MaintReason string
	Windows     []nodes.MaintenanceWindow
	// DownAlert is the node's down alert while it is down, for the
	// acknowledgement form.
	DownAlert   *nodes.Alert
	AckNote     string
	AckErrors   problem.FieldErrors
	AckNotice   string
	MaintErrors problem.FieldErrors
	MaintNotice string

	CredNotice string
	CredErr    string

	health nodeHealthView
}

func (h *Handler) nodeView(r *http.Request, name string) (nodeView, error) {
	ctx := r.Context()
	n, err := h.Nodes.GetNode(ctx, name)
	if err != nil {
		return nodeView{}, err
	}
	v := nodeView{Node: n, CanChange: canChange(r), JoinTTL: "1h"}
	if v.Carrying, err = h.Nodes.NodeWorkCounts(ctx, n.ID); err != nil {
		return v, err
	}
	if v.Work, err = h.Nodes.ListWork(ctx, nodes.WorkFilter{Node: n.Name, Limit: 20}); err != nil {
		return v, err
	}
	if v.Probes, err = h.Nodes.ProbeHistory(ctx, n.ID, 20); err != nil {
		return v, err
	}
	if v.Events, err = h.Nodes.ListEvents(ctx, n.Name, "", 20); err != nil {
		return v, err
	}
	if v.health, err = h.nodeHealthView(ctx, n); err != nil {
		return v, err
	}
	if err := h.nodeHistory(r, &v); err != nil {
		return v, err
	}
	if v.Windows, err = h.Nodes.ListMaintenance(ctx, n.Name, false); err != nil {
		return v, err
	}
	if v.DownAlert, err = h.Nodes.DownAlert(ctx, n); err != nil {
		return v, err
	}
	return v, nil
}

func (h *Handler) nodePage(w http.ResponseWriter, r *http.Request) error {
	v, err := h.nodeView(r, chi.URLParam(r, "name"))
	if err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, v.Node.Name, "nodes", nodeLive(v))
	}
	return h.render(w, r, v.Node.Name, "nodes", nodeBody(v))
}

// impactView is the preview of an admin state change or a removal.
type impactView struct {
	Impact nodes.Impact
	Modal  bool
}

func (h *Handler) nodePreview(w http.ResponseWriter, r *http.Request) error {
	name, target := chi.URLParam(r, "name"), r.URL.Query().Get("state")
	im, err := h.Nodes.PreviewChange(r.Context(), name, nodes.ActionFor(target))
	if err != nil {
		return err
	}
	return h.render(w, r, "Change "+name, "nodes", impactDialog(impactView{Impact: im, Modal: isHTMX(r)}))
}

func (h *Handler) nodeSetState(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	name, state := chi.URLParam(r, "name"), r.PostFormValue("state")
	n, mr, err := h.Nodes.SetAdminState(r.Context(), actor(r), name, state)
	if err != nil {
		return err
	}
	if !isHTMX(r) {
		http.Redirect(w, r, nodeURL(n.Name), http.StatusSeeOther)
		return nil
	}
	v, err := h.nodeView(r, n.Name)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("Node %s is now %s.", n.Name, n.AdminState)
	if state == nodes.StateDisabled {
		msg += " " + capitalize(mr.Summary(nodes.WorkKindFor(n.Kind))) + "."
	}
	return h.render(w, r, n.Name, "nodes", nodeStateResult(v, msg))
}

func (h *Handler) nodeRemove(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	if _, err := h.Nodes.RemoveNode(r.Context(), actor(r), chi.URLParam(r, "name"), r.PostFormValue("move") == "1"); err != nil {
		return err
	}
	return redirect(w, r, "/nodes")
}

func (h *Handler) nodeRotate(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	err := h.Nodes.RequestRotation(r.Context(), actor(r), name)
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	v, verr := h.nodeView(r, name)
	if verr != nil {
		return verr
	}
	if fe != nil {
		v.CredErr = fe["node"]
	} else {
		v.CredNotice = "Rotation requested: the agent takes a new credential on its next heartbeat; the old one keeps working for " + nodes.CredentialOverlap.String() + "."
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, name, "nodes", nodeCred(v))
	}
	return h.renderStatus(w, r, status, name, "nodes", nodeBody(v))
}

func (h *Handler) tokenCreate(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	name, ttlStr := chi.URLParam(r, "name"), r.PostFormValue("ttl")
	var jt nodes.JoinToken
	var err error
	replace := r.PostFormValue("replace") == "1"
	if !validTTL(ttlStr) {
		err = problem.FieldErrors{"ttl": "choose one of the offered lifetimes"}
	} else {
		ttl, _ := time.ParseDuration(ttlStr)
		create := h.Nodes.CreateJoinToken
		if replace {
			create = h.Nodes.CreateReplacementToken
		}
		jt, err = create(r.Context(), actor(r), name, ttl)
	}
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	v, verr := h.nodeView(r, name)
	if verr != nil {
		return verr
	}
	v.JoinReplace = replace
	if fe != nil {
		v.JoinErr = fe.Error()
		if m, ok := fe["replace"]; ok {
			v.JoinErr = capitalize(m) + "."
		}
	} else {
		v.Join, v.JoinTTL = &jt, ttlStr
		v.JoinCommand = h.joinCommand(jt.Token)
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, name, "nodes", nodeJoin(v))
	}
	return h.renderStatus(w, r, status, name, "nodes", nodeBody(v))
}

// joinCommand is the command an operator runs on the node's host; it
// holds the secret, so it is rendered once and never logged.
func (h *Handler) joinCommand(token string) string {
	server, pin := "https://CALLMANAGER:8443", "sha256:UNKNOWN"
	if h.Cluster != nil {
		server, pin = h.Cluster.JoinServer(), h.Cluster.CAPin()
	}
	return "nodeagent join --server " + server + " --token " + token + " --ca-pin " + pin + " --state-dir " + joinStateDir
}

func validTTL(s string) bool {
	for _, c := range ttlChoices {
		if c.Value == s {
			return true
		}
	}
	return false
}

// redirect sends the browser to target after a successful POST: a 303
// for a plain form, HX-Redirect for htmx.
func redirect(w http.ResponseWriter, r *http.Request, target string) error {
	if isHTMX(r) {
		w.Header().Set("HX-Redirect", target)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
	return nil
}

func nodeURL(name string) string { return "/nodes/" + url.PathEscape(name) }

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// pct is used/capacity in percent, capped at 100.
func pct(used, capacity int64) int64 {
	if capacity <= 0 {
		if used > 0 {
			return 100
		}
		return 0
	}
	p := used * 100 / capacity
	return min(p, 100)
}

// barClass is the CSS width class of a load bar (w0..w100 in steps of 10;
// the CSP forbids inline widths).
func barClass(used, capacity int64) string {
	p := pct(used, capacity)
	step := (p + 5) / 10 * 10
	if used > 0 && step == 0 {
		step = 10
	}
	return "w" + i64(min(step, 100))
}

// addressHint says what a node kind's service address looks like.
func addressHint(kind string) string {
	switch kind {
	case nodes.KindMeeting:
		return "an https:// or http:// URL of its WebRTC probe endpoint, e.g. https://10.0.0.7:8444/probe"
	case nodes.KindIM:
		return "host:port (TCP), e.g. 10.0.0.8:5222"
	default:
		return "host:port (SIP over UDP) or sip:host:port;transport=tcp, e.g. 10.0.0.5:5060"
	}
}

// impactSentence says in words what a previewed change will do. The
// counts are exact: the preview ran the change's own code.
func impactSentence(im nodes.Impact) string {
	wk := nodes.WorkKindFor(im.Node.Kind)
	switch im.Target {
	case nodes.StateEnabled:
		if im.Node.AdminState == nodes.StateEnabled {
			return "The node is already enabled; nothing changes."
		}
		return "The node takes new " + im.Node.Kind + " work again; work waiting unplaced is placed on it when it is up."
	case nodes.StateDraining:
		if im.Items == 0 {
			return "The node takes no new work. It carries none now."
		}
		return "The node keeps its " + nodes.WorkNoun(wk, im.Items) + " and takes no new work; nothing moves."
	}
	prefix := ""
	if im.Target == "remove" {
		prefix = "The node is deleted with its join tokens and credentials, so its agent is refused. "
	}
	if !im.MovesWork() {
		return prefix + "It carries no work, so nothing moves."
	}
	moved, unplaced := int64(im.Moved()), int64(len(im.Unplaced))
	if moved == 0 {
		return prefix + fmt.Sprintf("Does not fit: no other enabled, up %s node has room, so all %s will wait unplaced.", im.Node.Kind, nodes.WorkNoun(wk, unplaced))
	}
	dest := fmt.Sprintf("%d other %s node", len(im.Moves), im.Node.Kind)
	if len(im.Moves) != 1 {
		dest += "s"
	}
	if im.Fits() {
		return prefix + fmt.Sprintf("%s will move to %s.", capitalize(nodes.WorkNoun(wk, moved)), dest)
	}
	return prefix + fmt.Sprintf("Does not fit: %s will move to %s and %d will wait unplaced.",
		capitalize(nodes.WorkNoun(wk, moved)), dest, unplaced)
}
