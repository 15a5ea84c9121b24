package web

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/problem"
)

type tokensView struct {
	Join      []nodes.JoinTokenInfo
	API       []nodes.APITokenInfo
	CanChange bool
	Now       time.Time

	JoinNotice string

	APIName   string
	APIScope  string
	APITTL    string
	APIErrors problem.FieldErrors
	APINotice string
	NewAPI    *nodes.APIToken
}

func (h *Handler) tokensView(r *http.Request) (tokensView, error) {
	v := tokensView{CanChange: canChange(r), Now: time.Now()}
	var err error
	if v.Join, err = h.Nodes.ListJoinTokens(r.Context()); err != nil {
		return v, err
	}
	v.API, err = h.Nodes.ListAPITokens(r.Context())
	return v, err
}

func (h *Handler) tokensPage(w http.ResponseWriter, r *http.Request) error {
	v, err := h.tokensView(r)
	if err != nil {
		return err
	}
	if isHTMX(r) {
		return h.render(w, r, "Tokens", "tokens", joinTokens(v))
	}
	return h.render(w, r, "Tokens", "tokens", tokensBody(v))
}

func (h *Handler) tokenRevoke(w http.ResponseWriter, r *http.Request) error {
	return h.revoke(w, r, nodes.PrefixJoin, h.Nodes.RevokeJoinToken, joinTokens, func(v *tokensView, id string) {
		v.JoinNotice = "Join token " + id + " revoked."
	})
}

func (h *Handler) apiTokenRevoke(w http.ResponseWriter, r *http.Request) error {
	return h.revoke(w, r, nodes.PrefixAPI, h.Nodes.RevokeAPIToken, apiTokens, func(v *tokensView, id string) {
		v.APINotice = "API token " + id + " revoked; scripts using it are refused now."
	})
}

// revoke revokes a join or API token and shows its table again.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request, prefix string,
	revokeFn func(context.Context, nodes.Actor, string) error,
	part func(tokensView) templ.Component, notice func(*tokensView, string)) error {
	id := strings.TrimPrefix(chi.URLParam(r, "id"), prefix)
	if err := revokeFn(r.Context(), actor(r), id); err != nil {
		return err
	}
	if !isHTMX(r) {
		http.Redirect(w, r, "/tokens", http.StatusSeeOther)
		return nil
	}
	v, err := h.tokensView(r)
	if err != nil {
		return err
	}
	notice(&v, prefix+id)
	return h.render(w, r, "Tokens", "tokens", part(v))
}

func (h *Handler) apiTokenCreate(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	scope, ttlRaw := r.PostFormValue("scope"), strings.TrimSpace(r.PostFormValue("ttl"))
	in := nodes.APITokenInput{Name: name, Scope: scope}
	var err error
	if ttlRaw != "" {
		if in.TTL, err = time.ParseDuration(ttlRaw); err != nil || in.TTL <= 0 {
			err = problem.FieldErrors{"ttl": "use a duration such as 720h, or leave empty for no expiry"}
		}
	}
	var tok nodes.APIToken
	if err == nil {
		tok, err = h.Nodes.CreateScopedAPIToken(r.Context(), actor(r), in)
	}
	fe, status, err := formOutcome(err)
	if err != nil {
		return err
	}
	v, verr := h.tokensView(r)
	if verr != nil {
		return verr
	}
	if fe != nil {
		v.APIName, v.APIScope, v.APITTL, v.APIErrors = name, scope, ttlRaw, fe
	} else {
		v.NewAPI = &tok
	}
	if isHTMX(r) {
		return h.renderStatus(w, r, status, "Tokens", "tokens", apiTokens(v))
	}
	return h.renderStatus(w, r, status, "Tokens", "tokens", tokensBody(v))
}

// joinTokenState is a join token's state for people.
func joinTokenState(t nodes.JoinTokenInfo, now time.Time) string {
	switch {
	case t.UsedAt != nil:
		return "used"
	case t.RevokedAt != nil:
		return "revoked"
	case !t.ExpiresAt.After(now):
		return "expired"
	}
	return "active"
}
