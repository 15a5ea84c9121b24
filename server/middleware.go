package server

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"
)

// ContentSecurityPolicy allows only our own scripts and styles: no inline
// script, no eval, no framing.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// securityHeaders sets the security headers on every response.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		next.ServeHTTP(w, r)
	})
}

// requestLog logs one line per request. It logs the path but never the
// query string, headers or body, where tokens and credentials travel.
// Every 5xx is logged at error level with its cause, which handlers hand
// over through problem.RecordCause.
func requestLog(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := &loggedWriter{WrapResponseWriter: middleware.NewWrapResponseWriter(w, r.ProtoMajor)}
			next.ServeHTTP(ww, r)
			// Agents call the API every second each: their successful
			// calls are debug noise; portal changes and all failures are not.
			level := slog.LevelDebug
			switch {
			case ww.Status() >= 500:
				level = slog.LevelError
			case ww.Status() >= 400:
				level = slog.LevelInfo
			case r.Method != http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/v1/"):
				level = slog.LevelInfo
			}
			attrs := []any{"method", r.Method, "path", r.URL.Path, "status", ww.Status(),
				"bytes", ww.BytesWritten(), "duration", time.Since(start).Round(time.Microsecond),
				"remote", r.RemoteAddr}
			if ww.Status() >= 500 {
				cause := "no cause recorded"
				if ww.cause != nil {
					cause = ww.cause.Error()
				}
				attrs = append(attrs, "err", cause)
			}
			log.Log(r.Context(), level, "http request", attrs...)
		})
	}
}

// loggedWriter carries a handler's error to the request log.
type loggedWriter struct {
	middleware.WrapResponseWriter
	cause error
}

// RecordCause implements the interface problem.RecordCause looks for.
func (w *loggedWriter) RecordCause(err error) { w.cause = err }

// Unwrap lets http.ResponseController reach the connection.
func (w *loggedWriter) Unwrap() http.ResponseWriter { return w.WrapResponseWriter.Unwrap() }

// crossOrigin refuses cross-origin state-changing browser requests with 403.
func crossOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	return cop.Handler(next)
}
