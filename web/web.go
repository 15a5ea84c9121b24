// Package web is the administrator portal: HTMX + templ pages served by
// the call manager. Handlers hold no business logic: they parse the
// request, call the cluster domain (nodes) or accounts (nodes/accounts), and
// render a templ component — the full page on a plain request, the
// component alone for an htmx request.
package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/a-h/templ"
	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/web/layout"
)

// SessionCookie names the session cookie. The __Host- prefix makes the
// browser insist on Secure, Path=/ and no Domain.
const SessionCookie = "__Host-callplane_session"

// Cluster is what the portal needs to know about the running instance.
type Cluster interface {
	// InstanceID names this instance.
	InstanceID() string
	// LeaderID names the instance that leads now ("" when none).
	LeaderID(ctx context.Context) string
	// JoinServer is the URL agents use to reach the call manager.
	JoinServer() string
	// CAPin is the pin of the call manager's certificate.
	CAPin() string
}

// Handler serves the portal.
type Handler struct {
	Nodes   *nodes.Service
	Auth    *accounts.Service
	Cluster Cluster
	// Settings holds the health and alert settings (/settings).
	Settings SettingsStore
	// SIP is this instance's SIP front door (nil when it is off).
	SIP     SIPFront
	Log     *slog.Logger
	Version string
	// API lists the admin and agent API operations for the API page.
	API []APIOperation
}

type ctxKey int

const userKey ctxKey = 1

// UserFrom returns the signed-in user of a request, if any.
func UserFrom(ctx context.Context) (accounts.User, bool) {
	u, ok := ctx.Value(userKey).(accounts.User)
	return u, ok
}

// appHandler is a portal handler that returns its error for the adapter.
type appHandler func(w http.ResponseWriter, r *http.Request) error

// wrap adapts an appHandler, rendering its error as a page, or as a
// partial for htmx requests.
func (h *Handler) wrap(fn appHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.renderError(w, r, err)
		}
	}
}

func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, err error) {
	status := problem.HTTPStatus(err)
	if status >= 500 && !problem.RecordCause(w, err) {
		h.Log.Error("portal request failed", "path", r.URL.Path, "err", err)
	}
	setRetryAfter(w, err)
	WriteError(w, r, status, problem.Message(err))
}

var (
	errForbidden  = problem.New(problem.ErrForbidden, "your role does not allow this")
	errNotFound   = problem.New(problem.ErrNotFound, "page not found")
	errBadRequest = problem.New(problem.ErrInvalid, "bad request")
)

// isHTMX reports a request htmx made for a part of the page. A history
// restore (the back button with nothing cached) wants the whole page.
func isHTMX(r *http.Request) bool {
	return r.Header.Get("HX-Request") == "true" && r.Header.Get("HX-History-Restore-Request") != "true"
}

// StatusHeader carries the real status of an htmx answer that is sent
// as 200.
const StatusHeader = "X-Callplane-Status"

// writeStatus writes the status of an answer. A deliberate 4xx to htmx
// (a form with errors, a refused action) is sent as 200 with the status
// in StatusHeader: the page shows the message it carries, and the
// browser does not log a failed resource in the console for an outcome
// the page handles. Plain browser requests and API clients get the real
// status.
func writeStatus(w http.ResponseWriter, r *http.Request, status int) {
	if isHTMX(r) && status >= 400 && status < 500 {
		w.Header().Set(StatusHeader, strconv.Itoa(status))
		status = http.StatusOK
	}
	w.WriteHeader(status)
}

// render writes a component: full is the whole page, part the component
// htmx swaps.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, title, active string, part templ.Component) error {
	return h.renderStatus(w, r, http.StatusOK, title, active, part)
}

// renderStatus is render with a status, such as 422 for a form with errors.
// The page is rendered whole before anything is sent: it goes in one write
// with its length (a 70 KB node table was seventeen writes and as many TLS
// records), and a template that fails leaves nothing half-sent, so the
// error page can still go.
func (h *Handler) renderStatus(w http.ResponseWriter, r *http.Request, status int, title, active string, part templ.Component) error {
	buf := renderBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 { // an outsized page's buffer is not kept
			buf.Reset()
			renderBuffers.Put(buf)
		}
	}()
	if err := h.renderTo(buf, r, title, active, part); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Header().Add("Vary", "HX-Request")
	writeStatus(w, r, status)
	_, err := w.Write(buf.Bytes())
	return err
}

// renderBuffers keeps the buffers pages are rendered into.
var renderBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// renderTo renders the component htmx swaps (an htmx request) or the
// whole page around it.
func (h *Handler) renderTo(w io.Writer, r *http.Request, title, active string, part templ.Component) error {
	if isHTMX(r) {
		return part.Render(r.Context(), w)
	}
	u, _ := UserFrom(r.Context())
	shell := layout.Shell{Title: title, Active: active, Email: u.Email, Role: u.Role, Version: h.Version}
	if h.Cluster != nil {
		shell.Instance = h.Cluster.InstanceID()
		shell.Leader = h.Cluster.LeaderID(r.Context())
	}
	shell.Checker = h.checkerShell(r.Context())
	if v := h.incidentBanner(r); v != nil {
		shell.Incidents = incidentBanner(*v)
	}
	return layout.Page(shell).Render(templ.WithChildren(r.Context(), part), w)
}

// actor describes the signed-in user for the audit log.
func actor(r *http.Request) nodes.Actor {
	u, _ := UserFrom(r.Context())
	return nodes.Actor{Name: u.Email, Addr: ClientAddr(r)}
}

// ClientAddr is the request's source address without the port.
func ClientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Routes mounts the portal on r. Every route requires a signed-in user
// (deny by default) except sign-in, setup and static assets; each
// state-changing route names the least role allowed.
func (h *Handler) Routes(r chi.Router) {
	r.Use(h.loadSession)
	r.Get("/setup", h.wrap(h.setupForm))
	r.Post("/setup", h.wrap(h.setupSubmit))
	r.Get("/login", h.wrap(h.loginForm))
	r.Post("/login", h.wrap(h.loginSubmit))
	r.Group(func(r chi.Router) {
		r.Use(h.requireUser)
		r.Post("/logout", h.wrap(h.logout))
		h.viewerRoutes(r)
		r.Group(func(r chi.Router) {
			r.Use(requireRole(accounts.RoleAdmin, h))
			h.adminRoutes(r)
		})
		r.Group(func(r chi.Router) {
			r.Use(requireRole(accounts.RoleOwner, h))
			h.ownerRoutes(r)
		})
	})
	r.NotFound(h.wrap(func(w http.ResponseWriter, r *http.Request) error { return errNotFound }))
}

func (h *Handler) loadSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(SessionCookie)
		if err == nil && c.Value != "" {
			u, err := h.Auth.Session(r.Context(), c.Value)
			switch {
			case err == nil:
				r = r.WithContext(context.WithValue(r.Context(), userKey, u))
			case !errors.Is(err, accounts.ErrBadCredentials):
				// The session could not be checked (database down): say
				// so, rather than send a signed-in user to the sign-in form.
				h.renderError(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (h *Handler) requireUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := UserFrom(r.Context()); ok {
			next.ServeHTTP(w, r)
			return
		}
		target := "/login"
		if need, err := h.Auth.NeedsSetup(r.Context()); err == nil && need {
			target = "/setup"
		}
		if isHTMX(r) {
			// A live region polling after the session ended (signed out in
			// another tab, expired, user disabled): send the whole page to
			// the sign-in form. htmx acts on HX-Redirect in a 2xx answer
			// without swapping anything; a 401 would also be logged by the
			// browser as a failed resource.
			w.Header().Set("HX-Redirect", target)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") {
			if r.URL.Path != "/" && target == "/login" {
				target += "?next=" + templ.EscapeString(r.URL.Path)
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
		h.renderError(w, r, nodes.ErrUnauthorized)
	})
}

func requireRole(role string, h *Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, _ := UserFrom(r.Context())
			if !u.Can(role) {
				h.Nodes.AuditFailure(r.Context(), actor(r), "portal.forbidden", r.Method+" "+r.URL.Path, errForbidden)
				h.renderError(w, r, errForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// canChange reports whether the signed-in user may change the cluster,
// so pages hide buttons viewers cannot use.
func canChange(r *http.Request) bool {
	u, _ := UserFrom(r.Context())
	return u.Can(accounts.RoleAdmin)
}

// formOutcome splits the error of a form's action: field errors are shown
// on the form with 422; any other error goes to the error page.
func formOutcome(err error) (problem.FieldErrors, int, error) {
	var fe problem.FieldErrors
	switch {
	case err == nil:
		return nil, http.StatusOK, nil
	case errors.As(err, &fe):
		return fe, http.StatusUnprocessableEntity, nil
	}
	return nil, 0, err
}
