package web

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/callplane/callplane/nodes/accounts"

	"github.com/callplane/callplane/web/layout"
)

// setRetryAfter tells a throttled client when to come back.
func setRetryAfter(w http.ResponseWriter, err error) {
	var te *accounts.ThrottledError
	if errors.As(err, &te) {
		w.Header().Set("Retry-After", strconv.Itoa(te.RetryAfter()))
	}
}

// RetryAfterSeconds is the Retry-After of a 503 answered while the
// database is unreachable.
const RetryAfterSeconds = "5"

// msgUnavailable is what a 503 says; the cause goes to the log.
const msgUnavailable = "the database is unreachable; try again in a few seconds"

// causeRecorder is implemented by the server's request log, which logs
// the cause of every 5xx.
type causeRecorder interface{ RecordCause(error) }

// RecordCause hands the cause of a 5xx answer to the request log.
func RecordCause(w http.ResponseWriter, err error) bool {
	if rec, ok := w.(causeRecorder); ok {
		rec.RecordCause(err)
		return true
	}
	return false
}

// WriteError renders an error page (or the htmx partial) with status and
// a message a person may see; the edge uses it to refuse bad input.
func WriteError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", RetryAfterSeconds)
	}
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
