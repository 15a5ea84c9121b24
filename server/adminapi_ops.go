package server

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/settings"
)

// MaintenanceJSON is a maintenance window.
type MaintenanceJSON struct {
	ID          int64      `json:"id"`
	Node        string     `json:"node"`
	Start       time.Time  `json:"start"`
	End         time.Time  `json:"end"`
	Reason      string     `json:"reason"`
	CreatedBy   string     `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	Active      bool       `json:"active"`
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	CancelledBy string     `json:"cancelled_by,omitempty"`
}

func maintenanceJSON(w nodes.MaintenanceWindow, node string) MaintenanceJSON {
	return MaintenanceJSON{ID: w.ID, Node: node, Start: w.StartsAt, End: w.EndsAt, Reason: w.Reason,
		CreatedBy: w.CreatedBy, CreatedAt: w.CreatedAt, CancelledAt: w.CancelledAt, CancelledBy: w.CancelledBy,
		Active: w.Active(time.Now())}
}

func (s *Server) apiMaintenanceList(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	all, err := queryBool(r, "all")
	if err != nil {
		writeError(w, err)
		return
	}
	rows, err := s.nodes.ListMaintenance(r.Context(), name, all)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]MaintenanceJSON, len(rows))
	for i, m := range rows {
		out[i] = maintenanceJSON(m, name)
	}
	writeJSON(w, http.StatusOK, map[string]any{"maintenance": out})
}

func (s *Server) apiMaintenanceCurrent(w http.ResponseWriter, r *http.Request) {
	rows, err := s.nodes.ListCurrentMaintenance(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]MaintenanceJSON, len(rows))
	for i, m := range rows {
		out[i] = maintenanceJSON(m, m.NodeName)
	}
	writeJSON(w, http.StatusOK, map[string]any{"maintenance": out})
}

type maintenanceRequest struct {
	Start  string `json:"start"`
	End    string `json:"end"`
	Reason string `json:"reason"`
}

func (s *Server) apiMaintenanceAdd(w http.ResponseWriter, r *http.Request) {
	var req maintenanceRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	in := nodes.MaintenanceInput{Reason: req.Reason}
	fe := problem.FieldErrors{}
	if req.Start != "" {
		t, err := time.Parse(time.RFC3339, req.Start)
		if err != nil {
			fe.Add("start", "start must be an RFC 3339 time such as 2030-01-02T03:04:05Z (or absent for now)")
		}
		in.Start = t
	}
	if req.End == "" {
		fe.Add("end", "end is required (RFC 3339)")
	} else if t, err := time.Parse(time.RFC3339, req.End); err != nil {
		fe.Add("end", "end must be an RFC 3339 time such as 2030-01-02T05:04:05Z")
	} else {
		in.End = t
	}
	if err := fe.Err(); err != nil {
		writeError(w, err)
		return
	}
	name := chi.URLParam(r, "name")
	m, err := s.nodes.AddMaintenance(r.Context(), callerFrom(r.Context()), name, in)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, maintenanceJSON(m, name))
}

func (s *Server) apiMaintenanceCancel(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, problem.FieldErrors{"id": "id must be a maintenance window number"})
		return
	}
	m, err := s.nodes.CancelMaintenance(r.Context(), callerFrom(r.Context()), id)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, maintenanceJSON(m, ""))
}

// JoinTokenJSON is a join token as listed (never its secret).
type JoinTokenJSON struct {
	ID        string     `json:"id"`
	Node      string     `json:"node"`
	CreatedBy string     `json:"created_by"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by_addr,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	State     string     `json:"state"`
}

func (s *Server) apiJoinTokens(w http.ResponseWriter, r *http.Request) {
	rows, err := s.nodes.ListJoinTokens(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	now := time.Now()
	out := make([]JoinTokenJSON, len(rows))
	for i, t := range rows {
		state := "usable"
		switch {
		case t.UsedAt != nil:
			state = "used"
		case t.RevokedAt != nil:
			state = "revoked"
		case !t.ExpiresAt.After(now):
			state = "expired"
		}
		out[i] = JoinTokenJSON{ID: nodes.PrefixJoin + t.ID, Node: t.NodeName, CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt,
			ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt, UsedBy: t.UsedByAddr, RevokedAt: t.RevokedAt, State: state}
	}
	writeJSON(w, http.StatusOK, map[string]any{"join_tokens": out})
}

type joinTokenRequest struct {
	Node     string `json:"node"`
	TTL      string `json:"ttl"`
	StateDir string `json:"state_dir"`
}

func (s *Server) apiJoinTokenCreate(w http.ResponseWriter, r *http.Request) {
	var req joinTokenRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, problem.FieldErrors{"ttl": "ttl must be a duration such as 1h"})
			return
		}
		ttl = d
	}
	if req.Node == "" {
		writeError(w, problem.FieldErrors{"node": "node is required"})
		return
	}
	if req.StateDir == "" {
		req.StateDir = "/var/lib/callplane-agent"
	}
	jt, err := s.nodes.CreateJoinToken(r.Context(), callerFrom(r.Context()), req.Node, ttl)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": nodes.PrefixJoin + jt.ID, "node": jt.Node, "expires_at": jt.ExpiresAt, "token": jt.Token,
		"join_command": JoinCommand(s.URL(), jt.Token, s.pin, req.StateDir),
	})
}

func (s *Server) apiJoinTokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(chi.URLParam(r, "id"), nodes.PrefixJoin)
	if err := s.nodes.RevokeJoinToken(r.Context(), callerFrom(r.Context()), id); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revoked": nodes.PrefixJoin + id})
}

// APITokenJSON is an API token as listed (never its secret).
type APITokenJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Scope      string     `json:"scope"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

func (s *Server) apiAPITokens(w http.ResponseWriter, r *http.Request) {
	rows, err := s.nodes.ListAPITokens(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]APITokenJSON, len(rows))
	for i, t := range rows {
		out[i] = APITokenJSON{ID: nodes.PrefixAPI + t.ID, Name: t.Name, Scope: t.Scope, CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt,
			ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt}
	}
	writeJSON(w, http.StatusOK, map[string]any{"api_tokens": out})
}

type apiTokenRequest struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	TTL   string `json:"ttl"`
}

func (s *Server) apiAPITokenCreate(w http.ResponseWriter, r *http.Request) {
	var req apiTokenRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	in := nodes.APITokenInput{Name: req.Name, Scope: req.Scope}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeError(w, problem.FieldErrors{"ttl": "ttl must be a positive duration such as 720h"})
			return
		}
		in.TTL = d
	}
	t, err := s.nodes.CreateScopedAPIToken(r.Context(), callerFrom(r.Context()), in)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": nodes.PrefixAPI + t.ID, "name": t.Name, "scope": t.Scope, "expires_at": t.ExpiresAt, "token": t.Token})
}

func (s *Server) apiAPITokenRevoke(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(chi.URLParam(r, "id"), nodes.PrefixAPI)
	if err := s.nodes.RevokeAPIToken(r.Context(), callerFrom(r.Context()), id); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"revoked": nodes.PrefixAPI + id})
}

// WorkStepJSON is one change in a work item's history.
type WorkStepJSON struct {
	At    time.Time `json:"at"`
	State string    `json:"state"`
	Node  string    `json:"node,omitempty"`
	Epoch int64     `json:"epoch"`
}

func (s *Server) apiWorkGet(w http.ResponseWriter, r *http.Request) {
	wk, hist, err := s.nodes.WorkWithHistory(r.Context(), chi.URLParam(r, "ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	steps := make([]WorkStepJSON, len(hist))
	for i, h := range hist {
		steps[i] = WorkStepJSON{At: h.At, State: h.State, Node: h.NodeName, Epoch: h.Epoch}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"work": WorkJSON{ID: wk.ID, Ref: wk.Ref, Kind: wk.Kind, Cost: wk.Cost, State: wk.State, Node: wk.NodeName,
			Epoch: wk.Epoch, CreatedAt: wk.CreatedAt, UpdatedAt: wk.UpdatedAt, EndedAt: wk.EndedAt},
		"history": steps,
	})
}

// page answers one page of rows with the cursor of the next page (absent
// on the last one).
func page[T any](w http.ResponseWriter, key string, rows []T, limit int32, idOf func(T) int64) {
	out := map[string]any{key: rows}
	if len(rows) == int(limit) && len(rows) > 0 {
		out["next_cursor"] = strconv.FormatInt(idOf(rows[len(rows)-1]), 10)
	}
	writeJSON(w, http.StatusOK, out)
}

// pageParams reads ?cursor=, ?limit=, ?since= and ?until= (RFC 3339).
func pageParams(r *http.Request) (cursor int64, limit int32, since, until time.Time, err error) {
	q := r.URL.Query()
	fe := problem.FieldErrors{}
	if v := q.Get("cursor"); v != "" {
		if cursor, err = strconv.ParseInt(v, 10, 64); err != nil || cursor < 0 {
			fe.Add("cursor", "cursor must be the next_cursor of the previous page")
		}
	}
	if limit, err = queryLimit(r, 100, 1000); err != nil {
		fe.Add("limit", err.Error())
	}
	since, until = minTime, maxTime
	for _, p := range []struct {
		key string
		t   *time.Time
	}{{"since", &since}, {"until", &until}} {
		if v := q.Get(p.key); v != "" {
			t, perr := time.Parse(time.RFC3339, v)
			if perr != nil {
				fe.Add(p.key, p.key+" must be an RFC 3339 time")
				continue
			}
			*p.t = t
		}
	}
	return cursor, limit, since, until, fe.Err()
}

// The bounds of an open time filter, which the queries read as
// -infinity and infinity.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
)

// EventJSON is an event.
type EventJSON struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Node     string    `json:"node,omitempty"`
	Type     string    `json:"type"`
	Severity string    `json:"severity"`
	Message  string    `json:"message"`
	Actor    string    `json:"actor,omitempty"`
}

// AuditJSON is an audit log row.
type AuditJSON struct {
	ID         int64     `json:"id"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"`
	Target     string    `json:"target"`
	Result     string    `json:"result"`
	SourceAddr string    `json:"source_addr"`
	Detail     string    `json:"detail"`
}

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	cursor, limit, since, until, err := pageParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	rows, err := s.nodes.EventPage(r.Context(), nodes.EventFilter{Node: q.Get("node"), Type: q.Get("type"), Severity: q.Get("severity"),
		Actor: q.Get("actor"), Message: q.Get("q"), Since: since, Until: until}, nodes.NewestFirst(cursor, limit))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]EventJSON, len(rows))
	for i, e := range rows {
		out[i] = EventJSON{ID: e.ID, At: e.At, Node: e.NodeName, Type: e.Type, Severity: e.Severity, Message: e.Message, Actor: e.Actor}
	}
	page(w, "events", out, limit, func(e EventJSON) int64 { return e.ID })
}

func (s *Server) apiAudit(w http.ResponseWriter, r *http.Request) {
	cursor, limit, since, until, err := pageParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	rows, err := s.nodes.AuditPage(r.Context(), nodes.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"),
		Result: q.Get("result"), Detail: q.Get("q"), Since: since, Until: until}, nodes.NewestFirst(cursor, limit))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]AuditJSON, len(rows))
	for i, a := range rows {
		out[i] = AuditJSON{ID: a.ID, At: a.At, Actor: a.Actor, Action: a.Action, Target: a.Target, Result: a.Result, SourceAddr: a.SourceAddr, Detail: a.Detail}
	}
	page(w, "audit", out, limit, func(a AuditJSON) int64 { return a.ID })
}

// AlertJSON is an alert of the outbox.
type AlertJSON struct {
	ID        int64      `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	Type      string     `json:"type"`
	Node      string     `json:"node"`
	State     string     `json:"state"`
	Attempts  int32      `json:"attempts"`
	LastError string     `json:"last_error,omitempty"`
	SentAt    *time.Time `json:"sent_at,omitempty"`
	AckedAt   *time.Time `json:"acked_at,omitempty"`
	AckedBy   string     `json:"acked_by,omitempty"`
	AckNote   string     `json:"ack_note,omitempty"`
	Payload   any        `json:"payload"`
}

func alertJSON(a nodes.Alert) AlertJSON {
	return AlertJSON{ID: a.ID, CreatedAt: a.CreatedAt, Type: a.Type, Node: a.NodeName, State: a.State, Attempts: a.Attempts,
		LastError: a.LastError, SentAt: a.SentAt, AckedAt: a.AckedAt, AckedBy: a.AckedBy, AckNote: a.AckNote, Payload: json.RawMessage(a.Payload)}
}

func (s *Server) apiAlerts(w http.ResponseWriter, r *http.Request) {
	cursor, limit, _, _, err := pageParams(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	rows, err := s.nodes.ListAlerts(r.Context(), nodes.AlertFilter{Node: q.Get("node"), State: q.Get("state"), Type: q.Get("type"), Cursor: cursor, Limit: limit})
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]AlertJSON, len(rows))
	for i, a := range rows {
		out[i] = alertJSON(a)
	}
	page(w, "alerts", out, limit, func(a AlertJSON) int64 { return a.ID })
}

func (s *Server) apiAlertAck(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, problem.FieldErrors{"id": "id must be an alert number"})
		return
	}
	var req struct {
		Note string `json:"note"`
	}
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	a, err := s.nodes.AckAlert(r.Context(), callerFrom(r.Context()), id, req.Note)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, alertJSON(a))
}

// apiSettings shows the health, failover and alert settings; the SMTP
// password is never shown.
func (s *Server) apiSettings(w http.ResponseWriter, r *http.Request) {
	st, err := s.settings.Load(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	v := st.Values()
	v[settings.KeySMTPURL] = st.SMTPRedacted()
	writeJSON(w, http.StatusOK, map[string]any{"settings": v})
}

// apiSettingsSave changes the settings given and keeps the others.
func (s *Server) apiSettingsSave(w http.ResponseWriter, r *http.Request) {
	var req map[string]string
	if err := readJSON(r, &req); err != nil {
		writeError(w, problem.FieldErrors{"body": "send a JSON object of setting names to string values"})
		return
	}
	cur, err := s.settings.Load(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	v := cur.Values()
	v[settings.KeySMTPURL] = cur.SMTPRedacted()
	fe := problem.FieldErrors{}
	for k, val := range req {
		if _, ok := v[k]; !ok {
			fe.Add(k, "unknown setting")
			continue
		}
		v[k] = val
	}
	if err := fe.Err(); err != nil {
		writeError(w, err)
		return
	}
	st, err := s.settings.Save(r.Context(), callerFrom(r.Context()), v)
	if err != nil {
		writeError(w, err)
		return
	}
	out := st.Values()
	out[settings.KeySMTPURL] = st.SMTPRedacted()
	writeJSON(w, http.StatusOK, map[string]any{"settings": out})
}

// UserJSON is an account.
type UserJSON struct {
	ID        int64      `json:"id"`
	Email     string     `json:"email"`
	Role      string     `json:"role"`
	Disabled  bool       `json:"disabled"`
	CreatedAt time.Time  `json:"created_at"`
	DisabledA *time.Time `json:"disabled_at,omitempty"`
}

func (s *Server) apiUsers(w http.ResponseWriter, r *http.Request) {
	rows, err := s.auth.ListUsers(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]UserJSON, len(rows))
	for i, u := range rows {
		out[i] = UserJSON{ID: u.ID, Email: u.Email, Role: u.Role, Disabled: u.Disabled(), CreatedAt: u.CreatedAt, DisabledA: u.DisabledAt}
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

func (s *Server) apiUserAdd(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Role     string `json:"role"`
	}
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	c := callerOf(r)
	u, err := s.auth.AddUser(r.Context(), c.actor.Name, c.actor.Addr, req.Email, req.Password, req.Role)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": u.ID, "email": u.Email, "role": u.Role})
}

func (s *Server) apiUserEdit(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, problem.FieldErrors{"id": "id must be a user number"})
		return
	}
	var req struct {
		Role     *string `json:"role"`
		Disabled *bool   `json:"disabled"`
	}
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	if req.Role == nil && req.Disabled == nil {
		writeError(w, problem.FieldErrors{"body": "give role and/or disabled"})
		return
	}
	c := callerOf(r)
	if req.Role != nil {
		if err := s.auth.SetRole(r.Context(), c.user, c.actor.Addr, id, *req.Role); err != nil {
			writeError(w, err)
			return
		}
	}
	if req.Disabled != nil {
		if err := s.auth.SetDisabled(r.Context(), c.user, c.actor.Addr, id, *req.Disabled); err != nil {
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "updated": true})
}

func callerOf(r *http.Request) adminCaller {
	c, _ := r.Context().Value(adminKey{}).(adminCaller)
	return c
}

func queryBool(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, problem.FieldErrors{key: key + " must be true or false"}
	}
	return b, nil
}
