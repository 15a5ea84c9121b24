package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

func maintUntil(n nodes.Node) *time.Time {
	if n.InMaintenance(time.Now()) {
		return n.MaintenanceUntil
	}
	return nil
}

// nodeEditRequest is a partial edit: absent fields keep their value.
type nodeEditRequest struct {
	Address     *string `json:"address"`
	Capacity    *int    `json:"capacity"`
	Weight      *int    `json:"weight"`
	Region      *string `json:"region"`
	Description *string `json:"description"`
	// Confirm accepts a capacity below the node's load, which moves the
	// excess work; without it such an edit answers 409 with the preview.
	Confirm bool `json:"confirm"`
}

func (s *Server) apiNodeEdit(w http.ResponseWriter, r *http.Request) {
	var req nodeEditRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	name := chi.URLParam(r, "name")
	n, err := s.nodes.GetNode(r.Context(), name)
	if err != nil {
		writeError(w, err)
		return
	}
	in := nodes.NodeInput{Name: n.Name, Kind: n.Kind, Address: n.Address, Capacity: itoa(int(n.Capacity)),
		Weight: itoa(int(n.Weight)), Region: n.Region, Description: n.Description}
	if req.Address != nil {
		in.Address = *req.Address
	}
	if req.Capacity != nil {
		in.Capacity = strconv.Itoa(*req.Capacity)
	}
	if req.Weight != nil {
		in.Weight = strconv.Itoa(*req.Weight)
	}
	if req.Region != nil {
		in.Region = *req.Region
	}
	if req.Description != nil {
		in.Description = *req.Description
	}
	if req.Capacity != nil && *req.Capacity > 0 && int32(*req.Capacity) < n.Used && !req.Confirm {
		im, err := s.nodes.PreviewChange(r.Context(), name, nodes.Action{Action: nodes.ActionCapacity, Capacity: *req.Capacity})
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusConflict, map[string]any{
			"error":   "capacity " + strconv.Itoa(*req.Capacity) + " is below the node's load: the preview shows what would move; repeat with \"confirm\": true",
			"preview": im,
		})
		return
	}
	n, err = s.nodes.UpdateNode(r.Context(), callerFrom(r.Context()), name, in)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, nodeJSON(n))
}

func (s *Server) apiNodeRemove(w http.ResponseWriter, r *http.Request) {
	move := false
	if v := r.URL.Query().Get("move_work"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, problem.FieldErrors{"move_work": "move_work must be true or false"})
			return
		}
		move = b
	}
	name := chi.URLParam(r, "name")
	mr, err := s.nodes.RemoveNode(r.Context(), callerFrom(r.Context()), name, move)
	if err != nil {
		if errors.Is(err, nodes.ErrBusy) {
			s.nodes.AuditFailure(r.Context(), callerFrom(r.Context()), "node.remove", name, err)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": name, "moved": mr.Moved, "unplaced": mr.Unplaced, "moved_to": mr.To})
}

// previewRequest is {"action": "disable"|"drain"|"remove"|"capacity",
// "capacity": N}.
type previewRequest struct {
	Action   string `json:"action"`
	Capacity int    `json:"capacity"`
}

// apiNodePreview answers what an action would do to the node's work:
// {"moves": {"<node>": items}, "unplaced": items, "stays": items},
// computed by the action's own code in a transaction rolled back.
func (s *Server) apiNodePreview(w http.ResponseWriter, r *http.Request) {
	var req previewRequest
	if err := readJSON(r, &req); err != nil {
		badJSON(w, err)
		return
	}
	switch req.Action {
	case nodes.ActionDisable, nodes.ActionDrain, nodes.ActionRemove, nodes.ActionCapacity:
	default:
		writeError(w, problem.FieldErrors{"action": "action must be disable, drain, remove or capacity"})
		return
	}
	im, err := s.nodes.PreviewChange(r.Context(), chi.URLParam(r, "name"), nodes.Action{Action: req.Action, Capacity: req.Capacity})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, im)
}

// ProbeJSON is one probe result.
type ProbeJSON struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	LatencyMS float64   `json:"latency_ms"`
	Detail    string    `json:"detail"`
}

func (s *Server) apiNodeProbes(w http.ResponseWriter, r *http.Request) {
	n, err := s.nodes.GetNode(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, err)
		return
	}
	limit, err := queryLimit(r, 100, 1000)
	if err != nil {
		writeError(w, err)
		return
	}
	rows, err := s.nodes.ProbeHistory(r.Context(), n.ID, limit)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]ProbeJSON, len(rows))
	for i, p := range rows {
		out[i] = ProbeJSON{At: p.At, OK: p.OK, LatencyMS: float64(p.Latency.Microseconds()) / 1000, Detail: p.Detail}
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": n.Name, "probes": out})
}

func (s *Server) apiNodeRotate(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if err := s.nodes.RequestRotation(r.Context(), callerFrom(r.Context()), name); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"node": name, "rotation": "requested: the agent takes a new credential on its next heartbeat"})
}

func (s *Server) apiNodeClearHold(w http.ResponseWriter, r *http.Request) {
	n, err := s.nodes.ClearHold(r.Context(), callerFrom(r.Context()), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, nodeJSON(n))
}

// queryLimit reads ?limit= (def when absent, at most max).
func queryLimit(r *http.Request, def, max int32) (int32, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > int(max) {
		return 0, problem.FieldErrors{"limit": "limit must be a whole number from 1 to " + strconv.Itoa(int(max))}
	}
	return int32(n), nil
}
