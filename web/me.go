package web

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/problem"
)

// The signed-in user's own account (/account): change the password, see
// the sessions, sign out the other sessions. Every role may use it.

type meView struct {
	Email    string
	Role     string
	Sessions []accounts.Session
	Errors   problem.FieldErrors
	Notice   string
	Alert    string
}

func sessionToken(r *http.Request) string {
	if c, err := r.Cookie(SessionCookie); err == nil {
		return c.Value
	}
	return ""
}

func (h *Handler) meView(r *http.Request) (meView, error) {
	u, _ := UserFrom(r.Context())
	s, err := h.Auth.Sessions(r.Context(), u, sessionToken(r))
	return meView{Email: u.Email, Role: u.Role, Sessions: s}, err
}

func (h *Handler) accountPage(w http.ResponseWriter, r *http.Request) error {
	v, err := h.meView(r)
	if err != nil {
		return err
	}
	return h.render(w, r, "Your account", "account", accountBody(v))
}

func (h *Handler) accountPassword(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	u, _ := UserFrom(r.Context())
	ended, err := h.Auth.ChangePassword(r.Context(), u, ClientAddr(r), sessionToken(r),
		r.PostFormValue("current"), r.PostFormValue("password"), r.PostFormValue("confirm"))
	var fe problem.FieldErrors
	status := http.StatusOK
	switch {
	case errors.As(err, &fe):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, accounts.ErrThrottled):
		status = http.StatusTooManyRequests
	case err != nil:
		return err
	}
	v, verr := h.meView(r)
	if verr != nil {
		return verr
	}
	switch {
	case fe != nil:
		v.Errors = fe
	case err != nil:
		v.Alert = "Too many wrong passwords. Wait a few minutes and try again."
	default:
		v.Notice = fmt.Sprintf("Password changed. %s signed out.", capitalize(plural(ended, "other session")))
	}
	return h.renderStatus(w, r, status, "Your account", "account", accountBody(v))
}

func (h *Handler) accountEndOthers(w http.ResponseWriter, r *http.Request) error {
	u, _ := UserFrom(r.Context())
	ended, err := h.Auth.EndOtherSessions(r.Context(), u, ClientAddr(r), sessionToken(r))
	if err != nil {
		return err
	}
	v, err := h.meView(r)
	if err != nil {
		return err
	}
	v.Notice = fmt.Sprintf("%s signed out; this one stays signed in.", capitalize(plural(ended, "other session")))
	return h.render(w, r, "Your account", "account", accountBody(v))
}
