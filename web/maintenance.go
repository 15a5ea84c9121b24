package web

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

// nodeMaintenance schedules a maintenance window on a node (start empty:
// now), or cancels one (action=cancel, id).
func (h *Handler) nodeMaintenance(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	name := chi.URLParam(r, "name")
	start, end, reason := strings.TrimSpace(r.PostFormValue("start")), strings.TrimSpace(r.PostFormValue("until")), r.PostFormValue("reason")
	var err error
	var notice string
	if r.PostFormValue("action") == "cancel" {
		id, perr := strconv.ParseInt(r.PostFormValue("id"), 10, 64)
		if perr != nil {
			return errBadRequest
		}
		if _, err = h.Nodes.CancelMaintenance(r.Context(), actor(r), id); err == nil {
			notice = "Maintenance window cancelled."
		}
	} else {
		in := nodes.MaintenanceInput{Reason: reason}
		fe := problem.FieldErrors{}
		if start != "" {
			t, perr := time.ParseInLocation(maintLayout, start, time.UTC)
			if perr != nil {
				fe.Add("start", "use the form YYYY-MM-DDTHH:MM (UTC), or leave empty for now")
			}
			in.Start = t
		}
		t, perr := time.ParseInLocation(maintLayout, end, time.UTC)
		switch {
		case end == "":
			fe.Add("until", "say until when (UTC)")
		case perr != nil:
			fe.Add("until", "use the form YYYY-MM-DDTHH:MM (UTC)")
		}
		in.End = t
		if err = fe.Err(); err == nil {
			var win nodes.MaintenanceWindow
			if win, err = h.Nodes.AddMaintenance(r.Context(), actor(r), name, in); err == nil {
				notice = "Maintenance scheduled from " + fmtTime(win.StartsAt) + " to " + fmtTime(win.EndsAt) +
					": no alerts and no automatic failover inside the window."
			}
		}
	}
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	if fe == nil && !isHTMX(r) {
		http.Redirect(w, r, nodeURL(name), http.StatusSeeOther)
		return nil
	}
	v, verr := h.nodeView(r, name)
	if verr != nil {
		return verr
	}
	if msg, ok := fe["end"]; ok {
		// The service calls the end "end"; the form calls it "until".
		fe.Add("until", msg)
	}
	if fe != nil {
		v.MaintStart, v.MaintUntil, v.MaintReason, v.MaintErrors = start, end, reason, fe
	} else {
		v.MaintNotice = notice
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, name, "nodes", nodeMaint(v))
	}
	return h.renderStatus(w, r, status, name, "nodes", nodeBody(v))
}

// windowState says where a maintenance window stands now.
func windowState(start, end time.Time) string {
	now := time.Now()
	switch {
	case !end.After(now):
		return "ended"
	case !start.After(now):
		return "active"
	}
	return "scheduled"
}
