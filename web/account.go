package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/a-h/templ"
	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/problem"
)

func (h *Handler) setupForm(w http.ResponseWriter, r *http.Request) error {
	need, err := h.Auth.NeedsSetup(r.Context())
	if err != nil {
		return err
	}
	if !need {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return nil
	}
	return renderBare(w, r, http.StatusOK, setupPage(setupView{}))
}

func (h *Handler) setupSubmit(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	need, err := h.Auth.NeedsSetup(r.Context())
	if err != nil {
		return err
	}
	if !need {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return nil
	}
	v := setupView{Email: r.PostFormValue("email")}
	_, err = h.Auth.Setup(r.Context(), r.PostFormValue("code"), v.Email, r.PostFormValue("password"), ClientAddr(r))
	var fe problem.FieldErrors
	switch {
	case errors.As(err, &fe):
		v.Errors = fe
		return renderBare(w, r, http.StatusUnprocessableEntity, setupPage(v))
	case errors.Is(err, accounts.ErrBadCredentials):
		v.Alert = "Those details are not correct."
		return renderBare(w, r, http.StatusUnauthorized, setupPage(v))
	case errors.Is(err, accounts.ErrThrottled):
		v.Alert = "Too many attempts. " + retryHint(err)
		setRetryAfter(w, err)
		return renderBare(w, r, http.StatusTooManyRequests, setupPage(v))
	case errors.Is(err, accounts.ErrSetupDone):
		return redirect(w, r, "/login")
	case err != nil:
		return err
	}
	h.Log.Info("first-run setup complete: owner account created")
	return renderBare(w, r, http.StatusOK, loginPage(loginView{Email: v.Email, Notice: "Owner account created. Sign in to continue."}))
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) error {
	if need, err := h.Auth.NeedsSetup(r.Context()); err == nil && need {
		http.Redirect(w, r, "/setup", http.StatusSeeOther)
		return nil
	}
	if _, ok := UserFrom(r.Context()); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}
	return renderBare(w, r, http.StatusOK, loginPage(loginView{Next: safeNext(r.URL.Query().Get("next"))}))
}

func (h *Handler) loginSubmit(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	v := loginView{Email: strings.TrimSpace(r.PostFormValue("email")), Next: safeNext(r.PostFormValue("next")), Errors: map[string]string{}}
	pw := r.PostFormValue("password")
	if v.Email == "" {
		v.Errors["email"] = "enter your email"
	}
	if pw == "" {
		v.Errors["password"] = "enter your password"
	}
	if len(v.Errors) > 0 {
		return renderBare(w, r, http.StatusUnprocessableEntity, loginPage(v))
	}
	token, _, err := h.Auth.Login(r.Context(), v.Email, pw, ClientAddr(r), r.UserAgent())
	switch {
	case errors.Is(err, accounts.ErrBadCredentials):
		v.Alert = "Those details are not correct."
		return renderBare(w, r, http.StatusUnauthorized, loginPage(v))
	case errors.Is(err, accounts.ErrThrottled):
		v.Alert = "Too many sign-in attempts. " + retryHint(err)
		setRetryAfter(w, err)
		return renderBare(w, r, http.StatusTooManyRequests, loginPage(v))
	case err != nil:
		return err
	}
	// A new session id at every sign-in: end whatever session the browser had.
	if old, err := r.Cookie(SessionCookie); err == nil && old.Value != "" {
		u, _ := UserFrom(r.Context())
		_ = h.Auth.Logout(r.Context(), old.Value, u, ClientAddr(r))
	}
	setSessionCookie(w, token, int(h.Auth.AbsoluteTimeout.Seconds()))
	target := v.Next
	if target == "" {
		target = "/"
	}
	return redirect(w, r, target)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) error {
	if c, err := r.Cookie(SessionCookie); err == nil {
		u, _ := UserFrom(r.Context())
		if err := h.Auth.Logout(r.Context(), c.Value, u, ClientAddr(r)); err != nil {
			return err
		}
	}
	setSessionCookie(w, "", -1)
	if isHTMX(r) {
		w.Header().Set("HX-Redirect", "/login")
		return nil
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

func setSessionCookie(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
}

// retryHint says when a throttled client may try again.
func retryHint(err error) string {
	var te *accounts.ThrottledError
	if errors.As(err, &te) {
		return "Try again in " + strconv.Itoa(te.RetryAfter()) + " seconds."
	}
	return "Wait a few minutes and try again."
}

// safeNext keeps only same-site paths, so a sign-in link cannot send the
// user to another site: an absolute path of printable characters, not
// "//host" or "/\host" (which browsers read as another host), with no
// whitespace or control character (browsers drop tabs and newlines, so
// "/\t/evil.example" would become "//evil.example").
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || len(next) > 2000 {
		return ""
	}
	for _, r := range next {
		if r == '\\' || unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r) {
			return ""
		}
	}
	u, err := url.Parse(next)
	if err != nil || strings.HasPrefix(next, "//") || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/") {
		return ""
	}
	return next
}

func renderBare(w http.ResponseWriter, r *http.Request, status int, c templ.Component) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	writeStatus(w, r, status)
	return c.Render(r.Context(), w)
}

func (h *Handler) usersView(r *http.Request) (usersView, error) {
	users, err := h.Auth.ListUsers(r.Context())
	me, _ := UserFrom(r.Context())
	return usersView{Users: users, Me: me, Role: accounts.RoleViewer}, err
}

func (h *Handler) usersPage(w http.ResponseWriter, r *http.Request) error {
	v, err := h.usersView(r)
	if err != nil {
		return err
	}
	return h.render(w, r, "Users", "users", usersBody(v))
}

func (h *Handler) userAdd(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return errBadRequest
	}
	me, _ := UserFrom(r.Context())
	email, role := strings.TrimSpace(r.PostFormValue("email")), r.PostFormValue("role")
	status := http.StatusOK
	var fe problem.FieldErrors
	_, err := h.Auth.AddUser(r.Context(), me.Email, ClientAddr(r), email, r.PostFormValue("password"), role)
	if err != nil && !errors.As(err, &fe) {
		return err
	}
	v, lerr := h.usersView(r)
	if lerr != nil {
		return lerr
	}
	if fe != nil {
		v.Email, v.Role, v.Errors = email, role, fe
		status = http.StatusUnprocessableEntity
	} else {
		v.Notice = "Added " + email + " as " + role + "."
	}
	return h.renderStatus(w, r, status, "Users", "users", usersBody(v))
}

func (h *Handler) userRole(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		return errNotFound
	}
	me, _ := UserFrom(r.Context())
	return h.userChange(w, r, h.Auth.SetRole(r.Context(), me, ClientAddr(r), id, r.PostFormValue("role")), "Role changed.")
}

func (h *Handler) userDisable(disabled bool) appHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil {
			return errNotFound
		}
		me, _ := UserFrom(r.Context())
		if id == me.ID {
			return errors.Join(errBadRequest, errors.New("you cannot disable yourself"))
		}
		msg := "User enabled."
		if disabled {
			msg = "User disabled; their sessions have ended."
		}
		return h.userChange(w, r, h.Auth.SetDisabled(r.Context(), me, ClientAddr(r), id, disabled), msg)
	}
}

func (h *Handler) userChange(w http.ResponseWriter, r *http.Request, err error, notice string) error {
	var fe problem.FieldErrors
	if err != nil && !errors.As(err, &fe) {
		return err
	}
	v, lerr := h.usersView(r)
	if lerr != nil {
		return lerr
	}
	status := http.StatusOK
	if fe != nil {
		v.Alert = fe.Error()
		status = http.StatusUnprocessableEntity
	} else {
		v.Notice = notice
	}
	return h.renderStatus(w, r, status, "Users", "users", usersBody(v))
}
