package web

import "github.com/go-chi/chi/v5"

// All portal routes, in one place. GET routes answer htmx requests with
// the page's live region alone, which the pages poll to stay current.

// viewerRoutes are read-only pages every role may see.
func (h *Handler) viewerRoutes(r chi.Router) {
	r.Get("/", h.wrap(h.dashboard))
	r.Get("/nodes", h.wrap(h.nodesPage))
	r.Get("/nodes/{name}", h.wrap(h.nodePage))
	r.Get("/tokens", h.wrap(h.tokensPage))
	r.Get("/work", h.wrap(h.workPage))
	r.Get("/calls", h.wrap(h.callsPage))
	r.Get("/events", h.wrap(h.eventsPage))
	r.Get("/audit", h.wrap(h.auditPage))
	r.Get("/settings", h.wrap(h.settingsPage))
	r.Get("/incidents/banner", h.wrap(h.incidentsPart))
	r.Get("/account", h.wrap(h.accountPage))
	r.Post("/account/password", h.wrap(h.accountPassword))
	r.Post("/account/sessions/end-others", h.wrap(h.accountEndOthers))
	r.Get("/api", h.wrap(h.apiPage))
}

// adminRoutes change the cluster.
func (h *Handler) adminRoutes(r chi.Router) {
	r.Get("/nodes/new", h.wrap(h.nodeNewForm))
	r.Post("/nodes", h.wrap(h.nodeCreate))
	r.Get("/nodes/{name}/edit", h.wrap(h.nodeEditForm))
	r.Post("/nodes/{name}", h.wrap(h.nodeUpdate))
	r.Get("/nodes/{name}/preview", h.wrap(h.nodePreview))
	r.Post("/nodes/{name}/state", h.wrap(h.nodeSetState))
	r.Post("/nodes/{name}/remove", h.wrap(h.nodeRemove))
	r.Post("/nodes/{name}/maintenance", h.wrap(h.nodeMaintenance))
	r.Post("/nodes/{name}/ack", h.wrap(h.nodeAck))
	r.Post("/nodes/{name}/rotate", h.wrap(h.nodeRotate))
	r.Post("/nodes/{name}/tokens", h.wrap(h.tokenCreate))
	r.Post("/tokens/{id}/revoke", h.wrap(h.tokenRevoke))
	r.Post("/apitokens", h.wrap(h.apiTokenCreate))
	r.Post("/apitokens/{id}/revoke", h.wrap(h.apiTokenRevoke))
	r.Post("/work", h.wrap(h.workCreate))
	r.Post("/work/{ref}/end", h.wrap(h.workEnd))
	r.Post("/calls/settings", h.wrap(h.callsSettingsSave))
	r.Post("/settings", h.wrap(h.settingsSave))
	r.Post("/settings/test-email", h.wrap(h.settingsTestEmail))
	r.Post("/settings/disruption/confirm", h.wrap(h.disruptionConfirm))
	r.Post("/nodes/{name}/hold/clear", h.wrap(h.nodeClearHold))
	r.Post("/settings/retention", h.wrap(h.retentionSave))
}

// ownerRoutes manage accounts.
func (h *Handler) ownerRoutes(r chi.Router) {
	r.Get("/users", h.wrap(h.usersPage))
	r.Post("/users", h.wrap(h.userAdd))
	r.Post("/users/{id}/role", h.wrap(h.userRole))
	r.Post("/users/{id}/disable", h.wrap(h.userDisable(true)))
	r.Post("/users/{id}/enable", h.wrap(h.userDisable(false)))
}
