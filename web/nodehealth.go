package web

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
)

// nodeHealthView is what the node page shows of the health semantics:
// agent lost, the flap hold, start failures and the agent's run command.
type nodeHealthView struct {
	StartFailures []nodes.StartFailure
	RunCommand    string
	HoldNotice    string
	HoldErr       string
}

func (h *Handler) nodeHealthView(ctx context.Context, n nodes.Node) (nodeHealthView, error) {
	v := nodeHealthView{RunCommand: nodes.RunCommand(n.Kind, n.Address, joinStateDir)}
	var err error
	v.StartFailures, err = h.Nodes.StartFailures(ctx, n.ID, 10)
	return v, err
}

// nodeClearHold ends a flapping node's hold (admin, audited).
func (h *Handler) nodeClearHold(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "name")
	_, err := h.Nodes.ClearHold(r.Context(), actor(r), name)
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	v, verr := h.nodeView(r, name)
	if verr != nil {
		return verr
	}
	if fe != nil {
		v.health.HoldErr = fe["node"]
	} else {
		v.health.HoldNotice = "Flap hold cleared: the node comes up again as soon as its checks pass."
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, name, "nodes", nodeLive(v))
	}
	return h.renderStatus(w, r, status, name, "nodes", nodeBody(v))
}
