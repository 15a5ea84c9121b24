package web

import (
	"net/http"
	"time"
)

// APIOperation is one route of the API, as the API page lists it.
type APIOperation struct {
	Method, Path, Summary string
	// Auth is who may call it: none, node (agent credential), read (an
	// API token of either scope), admin or owner.
	Auth string
}

// apiPage introduces the admin API: how to authenticate, the OpenAPI
// document, every route, and the metrics endpoint.
func (h *Handler) apiPage(w http.ResponseWriter, r *http.Request) error {
	base := ""
	if h.Cluster != nil {
		base = h.Cluster.JoinServer()
	}
	return h.render(w, r, "API", "api", apiBody(base, h.API))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func now() time.Time { return time.Now() }
