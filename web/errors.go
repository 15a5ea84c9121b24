package web

import (
	"net/http"
	"strconv"

	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/web/layout"
)

// setRetryAfter tells a throttled client, or one answered 503, when to
// come back.
func setRetryAfter(w http.ResponseWriter, err error) {
	if s := problem.RetryAfter(err); s > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(s))
	}
}

// WriteError renders an error page (or the htmx partial) with status and
// a message a person may see; the edge uses it to refuse bad input. The
// status and message of an error come from problem (renderError).
func WriteError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	if isHTMX(r) {
		// The message goes to the page's flash area; a 4xx is sent as 200
		// with the status in a header (see writeStatus).
		w.Header().Set("HX-Retarget", "#flash")
		w.Header().Set("HX-Reswap", "innerHTML")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		writeStatus(w, r, status)
		_ = layout.ErrorPartial(status, msg).Render(r.Context(), w)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = layout.ErrorPage(status, http.StatusText(status), msg).Render(r.Context(), w)
}
