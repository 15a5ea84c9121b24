package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/web"
)

type adminKey struct{}

type adminCaller struct {
	actor    nodes.Actor
	canWrite bool
	owner    bool
	user     accounts.User // the signed-in user, for a session
}

// adminAuth accepts an API token (Bearer cpa_…; a read token may only
// GET) or, for scripts in the portal, a session cookie (a viewer may only
// GET); cross-origin protection covers the latter. Every refusal is
// audited.
func (s *Server) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c adminCaller
		if tok := bearer(r); tok != "" {
			ac, err := s.nodes.AuthAPIToken(r.Context(), tok)
			if err != nil {
				writeError(w, authFailure(err))
				return
			}
			c = adminCaller{actor: nodes.Actor{Name: "api:" + ac.Name, Addr: web.ClientAddr(r)}, canWrite: ac.CanWrite()}
		} else if ck, err := r.Cookie(web.SessionCookie); err == nil {
			u, err := s.auth.Session(r.Context(), ck.Value)
			if err != nil {
				writeError(w, authFailure(err))
				return
			}
			c = adminCaller{actor: nodes.Actor{Name: u.Email, Addr: web.ClientAddr(r)}, canWrite: u.Can(accounts.RoleAdmin), owner: u.Can(accounts.RoleOwner), user: u}
		} else {
			writeError(w, nodes.ErrUnauthorized)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !c.canWrite {
			s.refuse(w, r, c.actor, "this token or role may only read")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, c)))
	})
}

// refuse answers 403 and writes the refusal to the audit log.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, actor nodes.Actor, why string) {
	s.nodes.AuditFailure(r.Context(), actor, "api.forbidden", r.Method+" "+r.URL.Path, errors.New(why))
	writeJSON(w, http.StatusForbidden, map[string]string{"error": why})
}

func callerFrom(ctx context.Context) nodes.Actor {
	c, _ := ctx.Value(adminKey{}).(adminCaller)
	return c.actor
}

// ownerOnly lets only an owner's session through (account management).
func (s *Server) ownerOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(adminKey{}).(adminCaller)
		if !c.owner {
			s.refuse(w, r, c.actor, "only an owner (signed in) may manage accounts")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) adminRoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(s.adminAuth)
		r.Get("/nodes", s.apiNodes)
		r.Post("/nodes", s.apiNodeAdd)
		r.Get("/nodes/{name}", s.apiNode)
		r.Patch("/nodes/{name}", s.apiNodeEdit)
		r.Delete("/nodes/{name}", s.apiNodeRemove)
		r.Post("/nodes/{name}/{action:enable|drain|disable}", s.apiNodeState)
		r.Post("/nodes/{name}/preview", s.apiNodePreview)
		r.Get("/nodes/{name}/probes", s.apiNodeProbes)
		r.Post("/nodes/{name}/rotate", s.apiNodeRotate)
		r.Post("/nodes/{name}/hold/clear", s.apiNodeClearHold)
		r.Get("/nodes/{name}/maintenance", s.apiMaintenanceList)
		r.Post("/nodes/{name}/maintenance", s.apiMaintenanceAdd)
		r.Get("/maintenance", s.apiMaintenanceCurrent)
		r.Delete("/maintenance/{id}", s.apiMaintenanceCancel)
		r.Get("/join-tokens", s.apiJoinTokens)
		r.Post("/join-tokens", s.apiJoinTokenCreate)
		r.Delete("/join-tokens/{id}", s.apiJoinTokenRevoke)
		r.Get("/api-tokens", s.apiAPITokens)
		r.Post("/api-tokens", s.apiAPITokenCreate)
		r.Delete("/api-tokens/{id}", s.apiAPITokenRevoke)
		r.Post("/work", s.apiWorkCreate)
		r.Get("/work", s.apiWorkList)
		r.Get("/work/{ref}", s.apiWorkGet)
		r.Delete("/work/{ref}", s.apiWorkDelete)
		r.Get("/events", s.apiEvents)
		r.Get("/audit", s.apiAudit)
		r.Get("/alerts", s.apiAlerts)
		r.Post("/alerts/{id}/ack", s.apiAlertAck)
		r.Get("/settings", s.apiSettings)
		r.Patch("/settings", s.apiSettingsSave)
		r.Group(func(r chi.Router) {
			r.Use(s.ownerOnly)
			r.Get("/users", s.apiUsers)
			r.Post("/users", s.apiUserAdd)
			r.Patch("/users/{id}", s.apiUserEdit)
		})
	})
}

// NodeJSON is a node as the admin API shows it.
type NodeJSON struct {
	ID              int64      `json:"id"`
	Name            string     `json:"name"`
	Kind            string     `json:"kind"`
	Address         string     `json:"address"`
	Capacity        int32      `json:"capacity"`
	Weight          int32      `json:"weight"`
	Region          string     `json:"region"`
	Description     string     `json:"description"`
	AdminState      string     `json:"admin_state"`
	Health          string     `json:"health"`
	HealthChangedAt time.Time  `json:"health_changed_at"`
	Load            int32      `json:"load"`
	ReportedLoad    int32      `json:"reported_load"`
	Enrolled        bool       `json:"enrolled"`
	AgentVersion    string     `json:"agent_version"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
	Maintenance     bool       `json:"maintenance"`
	// MaintenanceUntil is when the maintenance window in force ends.
	MaintenanceUntil *time.Time `json:"maintenance_until,omitempty"`
	Flapping         bool       `json:"flapping"`
	// HoldUntil is when a flapping node's hold ends (null: not held).
	HoldUntil *time.Time `json:"hold_until"`
	// AgentLost: the service answers its probe but the agent is silent
	// since AgentLostSince; no work is moved.
	AgentLost      bool       `json:"agent_lost"`
	AgentLostSince *time.Time `json:"agent_lost_since"`
	// LastStartError is the last work start (--on-assign hook) failure.
	LastStartError string `json:"last_start_error"`
}

func nodeJSON(n nodes.Node) NodeJSON {
	j := NodeJSON{
		ID: n.ID, Name: n.Name, Kind: n.Kind, Address: n.Address, Capacity: n.Capacity, Weight: n.Weight,
		Region: n.Region, Description: n.Description, AdminState: n.AdminState, Health: n.Health,
		HealthChangedAt: n.HealthChangedAt, Load: n.Used, ReportedLoad: n.ReportedLoad, Enrolled: n.Enrolled(),
		AgentVersion: n.AgentVersion, LastHeartbeatAt: n.LastHeartbeatAt, Flapping: n.Flapping,
		Maintenance: n.InMaintenance(time.Now()), MaintenanceUntil: maintUntil(n),
		AgentLost: n.AgentLost(), AgentLostSince: n.AgentLostSince, LastStartError: n.LastHookError,
	}
	if n.Held(time.Now()) {
		j.HoldUntil = n.HoldUntil
	}
	return j
}

func (s *Server) apiNodes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	list, err := s.nodes.ListNodes(r.Context(), nodes.NodeFilter{Kind: q.Get("kind"), AdminState: q.Get("state"), Health: q.Get("health")})
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]NodeJSON, len(list))
	for i, n := range list {
		out[i] = nodeJSON(n)
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

func (s *Server) apiNode(w http.ResponseWriter, r *http.Request) {
	n, err := s.nodes.GetNode(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, nodeJSON(n))
}

type nodeAddRequest struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Address     string `json:"address"`
	Capacity    int    `json:"capacity"`
	Weight      *int   `json:"weight"` // absent: the default; present: validated, never replaced
	Region      string `json:"region"`
	Description string `json:"description"`
}

func (s *Server) apiNodeAdd(w http.ResponseWriter, r *http.Request) {
	var req nodeAddRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	in := nodes.NodeInput{Name: req.Name, Kind: req.Kind, Address: req.Address, Capacity: itoa(req.Capacity),
		Region: req.Region, Description: req.Description}
	if req.Weight != nil {
		in.Weight = strconv.Itoa(*req.Weight)
	}
	if req.Capacity <= 0 {
		in.Capacity = "0"
	}
	n, err := s.nodes.AddNode(r.Context(), callerFrom(r.Context()), in)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, nodeJSON(n))
}

func (s *Server) apiNodeState(w http.ResponseWriter, r *http.Request) {
	state := map[string]string{"enable": nodes.StateEnabled, "drain": nodes.StateDraining, "disable": nodes.StateDisabled}[chi.URLParam(r, "action")]
	n, mr, err := s.nodes.SetAdminState(r.Context(), callerFrom(r.Context()), chi.URLParam(r, "name"), state)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": nodeJSON(n), "moved": mr.Moved, "unplaced": mr.Unplaced, "moved_to": mr.To})
}

// apiWorkCreate places one work item ({kind, ref, cost}: 201, or 202 when
// it waits unplaced) or a batch of them (a JSON array of up to
// nodes.MaxBatch items: 201 with {"placements": [...]} in input order).
func (s *Server) apiWorkCreate(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if err := readJSON(r, &raw); err != nil {
		badJSON(w, err)
		return
	}
	if b := bytes.TrimLeft(raw, " \t\r\n"); len(b) > 0 && b[0] == '[' {
		s.apiWorkCreateBatch(w, r, raw)
		return
	}
	var in nodes.WorkInput
	if err := decodeStrict(raw, &in); err != nil {
		badJSON(w, err)
		return
	}
	p, err := s.nodes.PlaceWork(r.Context(), callerFrom(r.Context()), in)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusCreated
	if p.State == nodes.WorkUnplaced {
		status = http.StatusAccepted
	}
	writeJSON(w, status, p)
}

func (s *Server) apiWorkCreateBatch(w http.ResponseWriter, r *http.Request, raw json.RawMessage) {
	var items []nodes.WorkInput
	if err := decodeStrict(raw, &items); err != nil {
		badJSON(w, err)
		return
	}
	ps, err := s.nodes.PlaceWorkBatch(r.Context(), callerFrom(r.Context()), items)
	var bad nodes.BatchItemErrors
	var dup *nodes.DuplicateRefsError
	switch {
	case errors.As(err, &bad):
		byIndex := make(map[string]string, len(bad))
		for i, msg := range bad {
			byIndex[strconv.Itoa(i)] = msg
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": bad.Error(), "items": byIndex})
		return
	case errors.As(err, &dup):
		writeJSON(w, http.StatusConflict, map[string]any{"error": dup.Error(), "refs": dup.Refs})
		return
	case err != nil:
		if problem.HTTPStatus(err) == http.StatusInternalServerError {
			s.log.Error("place work batch", "items", len(items), "err", err)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"placements": ps})
}

// WorkJSON is a work item as the admin API shows it.
type WorkJSON struct {
	ID        int64      `json:"id"`
	Ref       string     `json:"ref"`
	Kind      string     `json:"kind"`
	Cost      int32      `json:"cost"`
	State     string     `json:"state"`
	Node      string     `json:"node,omitempty"`
	Epoch     int64      `json:"epoch"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

func (s *Server) apiWorkList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rows, err := s.nodes.ListWork(r.Context(), nodes.WorkFilter{Node: q.Get("node"), Kind: q.Get("kind"), State: q.Get("state"), Q: q.Get("q"), Limit: 1000})
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]WorkJSON, len(rows))
	for i, w := range rows {
		out[i] = WorkJSON{ID: w.ID, Ref: w.Ref, Kind: w.Kind, Cost: w.Cost, State: w.State, Node: w.NodeName, Epoch: w.Epoch,
			CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, EndedAt: w.EndedAt}
	}
	writeJSON(w, http.StatusOK, map[string]any{"work": out})
}

func (s *Server) apiWorkDelete(w http.ResponseWriter, r *http.Request) {
	wk, err := s.nodes.EndWork(r.Context(), callerFrom(r.Context()), chi.URLParam(r, "ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ref": wk.Ref, "state": wk.State})
}
