package web

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
)

// nodeAck acknowledges the down alert of a node that is down, with a
// note: reminders stop until it recovers, and the recovery email names
// who acknowledged.
func (h *Handler) nodeAck(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	name := chi.URLParam(r, "name")
	note := r.PostFormValue("note")
	v, err := h.nodeView(r, name)
	if err != nil {
		return err
	}
	if v.DownAlert == nil {
		err = nodes.ErrNotAcknowledgeable
	} else {
		_, err = h.Nodes.AckAlert(r.Context(), actor(r), v.DownAlert.ID, note)
	}
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	if fe == nil && !isHTMX(r) {
		http.Redirect(w, r, nodeURL(name), http.StatusSeeOther)
		return nil
	}
	if v, err = h.nodeView(r, name); err != nil {
		return err
	}
	if fe != nil {
		v.AckNote, v.AckErrors = note, fe
	} else {
		v.AckNotice = "Alert acknowledged: reminders stop until the node recovers."
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, name, "nodes", nodeAck(v))
	}
	return h.renderStatus(w, r, status, name, "nodes", nodeBody(v))
}
