package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/server/metrics"
	"github.com/callplane/callplane/web"
)

// DefaultHeartbeatInterval is how often agents are told to heartbeat.
const DefaultHeartbeatInterval = time.Second

// MaxPollWait bounds an assignment long-poll.
const MaxPollWait = 60 * time.Second

func (s *Server) agentRoutes(r chi.Router) {
	r.Post("/enroll", s.enroll)
	// A disabled node keeps heartbeating, so its real health shows and
	// enabling it is no false recovery; it gets no work (403 below).
	r.With(s.nodeAuthAllowDisabled).Post("/heartbeat", s.heartbeat)
	r.Group(func(r chi.Router) {
		r.Use(s.nodeAuth)
		r.Get("/assignments", s.assignments)
		r.Post("/assignments/ack", s.ackBatch)
		r.Post("/assignments/{id}/ack", s.ack)
	})
}

type nodeAuthKey struct{}

func nodeFrom(ctx context.Context) nodes.NodeAuth {
	a, _ := ctx.Value(nodeAuthKey{}).(nodes.NodeAuth)
	return a
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// nodeAuth authenticates agents by their bearer credential only: the
// agent API never looks at cookies. A disabled node gets 403.
func (s *Server) nodeAuth(next http.Handler) http.Handler { return s.authNode(next, false) }

// nodeAuthAllowDisabled is nodeAuth that lets a disabled node through
// (heartbeats); a bad credential is still 401.
func (s *Server) nodeAuthAllowDisabled(next http.Handler) http.Handler { return s.authNode(next, true) }

func (s *Server) authNode(next http.Handler, allowDisabled bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.nodes.AuthNode(r.Context(), bearer(r))
		if allowDisabled && errors.Is(err, nodes.ErrForbidden) && a.NodeID != 0 {
			err = nil
		}
		if err != nil {
			if !errors.Is(err, nodes.ErrUnauthorized) && !errors.Is(err, nodes.ErrForbidden) {
				s.log.Error("authenticate agent", "err", err)
			}
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nodeAuthKey{}, a)))
	})
}

type enrollRequest struct {
	Token   string `json:"token"`
	Address string `json:"address"`
	Version string `json:"version"`
}

type enrollResponse struct {
	nodes.EnrollResult
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	addr := web.ClientAddr(r)
	if !s.enrolLim.allow(addr) {
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many enrolment attempts; wait a minute"})
		return
	}
	var req enrollRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	res, err := s.nodes.Enroll(r.Context(), nodes.EnrollRequest{Token: req.Token, Address: req.Address, Version: req.Version, RemoteAddr: addr})
	if err != nil {
		if db.Unreachable(err) {
			writeError(w, err) // 503: come back, the token is still good
			return
		}
		if !errors.Is(err, nodes.ErrUnauthorized) {
			s.log.Error("enrol node", "token", nodes.TokenID(req.Token), "err", err)
			err = nodes.ErrUnauthorized
		}
		s.log.Info("enrolment refused", "token", nodes.TokenID(req.Token), "remote", addr)
		s.nodes.AuditFailure(r.Context(), nodes.Actor{Name: "agent", Addr: addr}, "node.enroll", nodes.TokenID(req.Token), err)
		writeError(w, err)
		return
	}
	s.log.Info("node enrolled", "node", res.NodeName, "token", nodes.TokenID(req.Token), "remote", addr)
	writeJSON(w, http.StatusOK, enrollResponse{EnrollResult: res, HeartbeatIntervalMS: DefaultHeartbeatInterval.Milliseconds()})
}

type heartbeatRequest struct {
	Load    int32           `json:"load"`
	Version string          `json:"version"`
	Running []nodes.Running `json:"running"`
}

type heartbeatResponse struct {
	AdminState          string `json:"admin_state"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	Credential          string `json:"credential,omitempty"`
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	var req heartbeatRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	s.hb.Record(a.NodeID, max(req.Load, 0), req.Version)
	if req.Running != nil && a.AdminState != nodes.StateDisabled { // only some heartbeats carry the running set
		s.maybeReconcile(r.Context(), a, req.Running)
	}
	resp := heartbeatResponse{AdminState: a.AdminState, HeartbeatIntervalMS: DefaultHeartbeatInterval.Milliseconds()}
	if a.RotateRequested {
		cred, err := s.nodes.RotateCredential(r.Context(), a)
		if err != nil {
			writeError(w, err)
			return
		}
		resp.Credential = cred
		s.log.Info("node credential rotated", "node", a.Name)
	}
	writeJSON(w, http.StatusOK, resp)
}

// assignments answers at once when the node's assignment version is newer
// than since, else when a notification says it changed, else at wait.
func (s *Server) assignments(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	q := r.URL.Query()
	since, err := strconv.ParseInt(q.Get("since"), 10, 64)
	if q.Get("since") == "" {
		since, err = 0, nil
	}
	if err != nil || since < 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "since must be a non-negative integer"})
		return
	}
	wait := 30 * time.Second
	if ws := q.Get("wait"); ws != "" {
		wait, err = time.ParseDuration(ws)
		if err != nil || wait < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "wait must be a duration such as 30s"})
			return
		}
	}
	wait = min(wait, MaxPollWait)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// Take the wake channel before reading, so no change slips between.
	woken := s.hub.Wait(a.NodeID)
	v, err := s.nodes.Version(r.Context(), a.NodeID)
	if err != nil {
		writeError(w, err)
		return
	}
	if v <= since {
		metrics.LongPollWaiters.Inc()
		defer metrics.LongPollWaiters.Dec()
		// Nothing new yet: wait. A wake almost always means a new version,
		// so read the desired set (one statement) straight away rather
		// than the version first and the set after.
		for {
			select {
			case <-woken:
			case <-timer.C:
				s.answerDesired(w, r, a.NodeID)
				return
			case <-s.hub.Closing():
				// Shutting down: answer now; the agent polls another instance.
				s.answerDesired(w, r, a.NodeID)
				return
			case <-r.Context().Done():
				return
			}
			woken = s.hub.Wait(a.NodeID)
			ds, err := s.nodes.Desired(r.Context(), a.NodeID)
			if err != nil {
				writeError(w, err)
				return
			}
			if ds.Version > since {
				writeJSON(w, http.StatusOK, ds)
				return
			}
		}
	}
	s.answerDesired(w, r, a.NodeID)
}

func (s *Server) answerDesired(w http.ResponseWriter, r *http.Request, nodeID int64) {
	ds, err := s.nodes.Desired(r.Context(), nodeID)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

type ackRequest struct {
	State string `json:"state"`
	Epoch int64  `json:"epoch"`
	// Error is why a start failed (state "failed").
	Error string `json:"error"`
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such assignment"})
		return
	}
	var req ackRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	if _, err := s.nodes.Ack(r.Context(), a.NodeID, nodes.AckInput{ID: id, Epoch: req.Epoch, State: req.State, Error: req.Error}); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

type ackBatchRequest struct {
	Acks []nodes.AckInput `json:"acks"`
}

// ackResult is one entry of a batch ack's answer: ok, or the error (and
// the status) the single ack would have answered.
type ackResult struct {
	ID     int64  `json:"id"`
	OK     bool   `json:"ok,omitempty"`
	Error  string `json:"error,omitempty"`
	Status int    `json:"status,omitempty"`
}

// ackBatch records many acks of the calling node in one request:
// {"acks": [{id, epoch, state}, ...]} → {"results": [...]} in input order,
// 200 even when some acks were refused.
func (s *Server) ackBatch(w http.ResponseWriter, r *http.Request) {
	a := nodeFrom(r.Context())
	var req ackBatchRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	res, err := s.nodes.AckBatch(r.Context(), a.NodeID, req.Acks)
	if err != nil {
		if problem.HTTPStatus(err) == http.StatusInternalServerError {
			s.log.Error("ack batch", "node", a.Name, "acks", len(req.Acks), "err", err)
		}
		writeError(w, err)
		return
	}
	out := make([]ackResult, len(res))
	for i, x := range res {
		out[i] = ackResult{ID: x.ID, OK: x.Err == nil}
		if x.Err != nil {
			out[i].Status, out[i].Error = problem.HTTPStatus(x.Err), problem.Message(x.Err)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": out})
}
