package server

import (
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/callplane/callplane/web"
)

// apiDocRoutes serves the OpenAPI document and answers every other
// /api/v1 path with a JSON error: 404 for an unknown path, 405 (with
// Allow) for a known path and the wrong method.
func (s *Server) apiDocRoutes(r chi.Router) {
	r.Get("/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		writeJSON(w, http.StatusOK, OpenAPI(s.cfg.Version))
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such API route: " + r.Method + " " + r.URL.Path + " (see /api/v1/openapi.json)"})
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + r.Method + " is not allowed on " + r.URL.Path})
	})
}

// apiOp is one documented operation of the API.
type apiOp struct {
	method, path, summary string
	auth                  string // "", "node", "read", "admin", "owner"
	params                []apiParam
	body                  string // schema name of the JSON body, "" for none
	status                string // success status
	result                string // schema name of the success answer
}

type apiParam struct {
	name, in, desc string
	typ            string // string, integer, boolean
}

func q(name, typ, desc string) apiParam {
	return apiParam{name: name, in: "query", typ: typ, desc: desc}
}

var (
	pName   = apiParam{name: "name", in: "path", typ: "string", desc: "node name"}
	pRef    = apiParam{name: "ref", in: "path", typ: "string", desc: "work reference"}
	pID     = apiParam{name: "id", in: "path", typ: "string", desc: "identifier"}
	pCursor = q("cursor", "string", "next_cursor of the previous page")
	pLimit  = q("limit", "integer", "page size (1-1000, default 100)")
	pSince  = q("since", "string", "RFC 3339 lower bound of the time")
	pUntil  = q("until", "string", "RFC 3339 upper bound of the time (exclusive)")
)

// pollParams are the query parameters of the long-poll, GET or POST.
var pollParams = []apiParam{q("since", "integer", "last version seen"), q("wait", "string", "how long to wait, e.g. 30s (max 60s)"),
	q("delta", "string", "1: answer what changed since the version, not the whole set"),
	q("stream", "string", "1: keep answering, one desired set per line (application/x-ndjson) at every change until wait. A GET's acks ride the heartbeats; a POST's body is its acks, one AckBatch per line while the answer streams, each line's results a line of their own, and {\"end\": true} before the answer ends; with the beat-stream feature a body line may be {\"beat\": heartbeat request}, answered by a line {\"beat\": heartbeat answer}")}

// apiOps lists every /api/v1 route. A test checks it against the router
// both ways.
var apiOps = []apiOp{
	{method: "POST", path: "/enroll", summary: "Enrol a node agent with a one-time join token", body: "EnrollRequest", status: "200", result: "EnrollResult"},
	{method: "POST", path: "/heartbeat", summary: "Agent heartbeat", auth: "node", body: "Heartbeat", status: "200", result: "HeartbeatResult"},
	{method: "GET", path: "/assignments", summary: "Long-poll the node's desired assignments", auth: "node",
		params: pollParams, status: "200", result: "DesiredSet"},
	{method: "POST", path: "/assignments", summary: "Long-poll carrying the acks the last answer owes (recorded as by the batch ack; their results in the answer's acks); with stream=1, a stream whose body carries the acks as they fall due", auth: "node",
		params: pollParams, body: "AckBatch", status: "200", result: "DesiredSet"},
	{method: "POST", path: "/assignments/ack", summary: "Acknowledge several assignments", auth: "node", body: "AckBatch", status: "200", result: "Object"},
	{method: "POST", path: "/assignments/{id}/ack", summary: "Acknowledge one assignment", auth: "node", params: []apiParam{pID}, body: "Ack", status: "200", result: "Object"},

	{method: "GET", path: "/nodes", summary: "List nodes", auth: "read", params: []apiParam{q("kind", "string", "node kind"), q("state", "string", "admin state"), q("health", "string", "health")}, status: "200", result: "NodeList"},
	{method: "POST", path: "/nodes", summary: "Register a node", auth: "admin", body: "NodeAdd", status: "201", result: "Node"},
	{method: "GET", path: "/nodes/{name}", summary: "Show a node", auth: "read", params: []apiParam{pName}, status: "200", result: "Node"},
	{method: "PATCH", path: "/nodes/{name}", summary: "Edit a node (absent fields keep their value); a capacity below the load needs confirm", auth: "admin", params: []apiParam{pName}, body: "NodeEdit", status: "200", result: "Node"},
	{method: "DELETE", path: "/nodes/{name}", summary: "Remove a node (move_work=true moves its work first)", auth: "admin", params: []apiParam{pName, q("move_work", "boolean", "move the node's work away first")}, status: "200", result: "Object"},
	{method: "POST", path: "/nodes/{name}/enable", summary: "Enable a node", auth: "admin", params: []apiParam{pName}, status: "200", result: "StateChange"},
	{method: "POST", path: "/nodes/{name}/drain", summary: "Drain a node (keeps its work, takes no new work)", auth: "admin", params: []apiParam{pName}, status: "200", result: "StateChange"},
	{method: "POST", path: "/nodes/{name}/disable", summary: "Disable a node (its work moves away now)", auth: "admin", params: []apiParam{pName}, status: "200", result: "StateChange"},
	{method: "POST", path: "/nodes/{name}/preview", summary: "Preview what an action would move, computed by the code that performs it", auth: "admin", params: []apiParam{pName}, body: "PreviewRequest", status: "200", result: "Preview"},
	{method: "GET", path: "/nodes/{name}/probes", summary: "A node's newest probe results", auth: "read", params: []apiParam{pName, pLimit}, status: "200", result: "Object"},
	{method: "POST", path: "/nodes/{name}/rotate", summary: "Ask the node's agent to take a new credential", auth: "admin", params: []apiParam{pName}, status: "202", result: "Object"},
	{method: "POST", path: "/nodes/{name}/hold/clear", summary: "Clear a flapping node's hold", auth: "admin", params: []apiParam{pName}, status: "200", result: "Node"},
	{method: "GET", path: "/nodes/{name}/maintenance", summary: "A node's maintenance windows (all=true: with ended and cancelled ones)", auth: "read", params: []apiParam{pName, q("all", "boolean", "include ended and cancelled windows")}, status: "200", result: "MaintenanceList"},
	{method: "POST", path: "/nodes/{name}/maintenance", summary: "Schedule a maintenance window (start may be in the future)", auth: "admin", params: []apiParam{pName}, body: "MaintenanceRequest", status: "201", result: "Maintenance"},
	{method: "GET", path: "/maintenance", summary: "Every maintenance window in force or to come", auth: "read", status: "200", result: "MaintenanceList"},
	{method: "DELETE", path: "/maintenance/{id}", summary: "Cancel a maintenance window", auth: "admin", params: []apiParam{pID}, status: "200", result: "Maintenance"},

	{method: "GET", path: "/join-tokens", summary: "List join tokens (never their secrets)", auth: "read", status: "200", result: "Object"},
	{method: "POST", path: "/join-tokens", summary: "Create a join token and its ready join command (shown once)", auth: "admin", body: "JoinTokenRequest", status: "201", result: "Object"},
	{method: "DELETE", path: "/join-tokens/{id}", summary: "Revoke an unused join token", auth: "admin", params: []apiParam{pID}, status: "200", result: "Object"},
	{method: "GET", path: "/api-tokens", summary: "List API tokens with scope, expiry and last use", auth: "read", status: "200", result: "Object"},
	{method: "POST", path: "/api-tokens", summary: "Create an API token (shown once)", auth: "admin", body: "APITokenRequest", status: "201", result: "Object"},
	{method: "DELETE", path: "/api-tokens/{id}", summary: "Revoke an API token", auth: "admin", params: []apiParam{pID}, status: "200", result: "Object"},

	{method: "POST", path: "/work", summary: "Place a work item (or a JSON array of up to 1000)", auth: "admin", body: "WorkInput", status: "201", result: "Placement"},
	{method: "GET", path: "/work", summary: "List work", auth: "read", params: []apiParam{q("node", "string", "node name"), q("kind", "string", "work kind"), q("state", "string", "work state"), q("q", "string", "ref contains")}, status: "200", result: "Object"},
	{method: "GET", path: "/work/{ref}", summary: "A work item with its history", auth: "read", params: []apiParam{pRef}, status: "200", result: "WorkDetail"},
	{method: "DELETE", path: "/work/{ref}", summary: "End a work item", auth: "admin", params: []apiParam{pRef}, status: "200", result: "Object"},

	{method: "GET", path: "/events", summary: "Events, newest first, with filters and cursor paging", auth: "read",
		params: []apiParam{q("node", "string", "node name"), q("type", "string", "event type"), q("severity", "string", "info, warning or critical"), q("actor", "string", "who"), q("q", "string", "message contains"), pSince, pUntil, pCursor, pLimit}, status: "200", result: "EventPage"},
	{method: "GET", path: "/audit", summary: "Audit log, newest first, with filters and cursor paging", auth: "read",
		params: []apiParam{q("actor", "string", "who"), q("action", "string", "action or its prefix (node matches node.add)"), q("target", "string", "target"), q("result", "string", "ok, error, throttled"), q("q", "string", "detail or target contains"), pSince, pUntil, pCursor, pLimit}, status: "200", result: "AuditPage"},
	{method: "GET", path: "/alerts", summary: "The alert outbox, newest first", auth: "read", params: []apiParam{q("node", "string", "node name"), q("state", "string", "pending, sent or failed"), q("type", "string", "health or capacity"), pCursor, pLimit}, status: "200", result: "AlertPage"},
	{method: "POST", path: "/alerts/{id}/ack", summary: "Acknowledge a down node's alert: reminders stop until it recovers", auth: "admin", params: []apiParam{pID}, body: "AckNote", status: "200", result: "Alert"},
	{method: "GET", path: "/settings", summary: "Health, failover and alert settings (SMTP password hidden)", auth: "read", status: "200", result: "Settings"},
	{method: "PATCH", path: "/settings", summary: "Change some settings", auth: "admin", body: "SettingsPatch", status: "200", result: "Settings"},
	{method: "GET", path: "/users", summary: "List accounts (owner only)", auth: "owner", status: "200", result: "Object"},
	{method: "POST", path: "/users", summary: "Add an account (owner only)", auth: "owner", body: "UserAdd", status: "201", result: "Object"},
	{method: "PATCH", path: "/users/{id}", summary: "Change an account's role or disable it (owner only)", auth: "owner", params: []apiParam{pID}, body: "UserEdit", status: "200", result: "Object"},
	{method: "GET", path: "/openapi.json", summary: "This document", status: "200", result: "Object"},
}

func obj(props map[string]any, required ...string) map[string]any {
	m := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		m["required"] = required
	}
	return m
}

func str(desc string) map[string]any { return map[string]any{"type": "string", "description": desc} }

var (
	tInt    = map[string]any{"type": "integer"}
	tBool   = map[string]any{"type": "boolean"}
	tStr    = map[string]any{"type": "string"}
	tTime   = map[string]any{"type": "string", "format": "date-time"}
	tTimeN  = map[string]any{"type": []string{"string", "null"}, "format": "date-time"}
	tObject = map[string]any{"type": "object"}
)

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }
func arr(item map[string]any) map[string]any {
	return map[string]any{"type": "array", "items": item}
}

func schemas() map[string]any {
	workItem := obj(map[string]any{"ref": tStr, "kind": tStr, "cost": tInt})
	maint := obj(map[string]any{"id": tInt, "node": tStr, "start": tTime, "end": tTime, "reason": tStr, "created_by": tStr,
		"created_at": tTime, "active": tBool, "cancelled_at": tTime, "cancelled_by": tStr})
	ackResults := arr(obj(map[string]any{"id": tInt, "ok": tBool, "error": tStr, "status": tInt}))
	return map[string]any{
		"Error":  obj(map[string]any{"error": str("what went wrong")}, "error"),
		"Object": tObject,
		"EnrollRequest": obj(map[string]any{"token": str("cpj_… join token"), "address": str("service address"),
			"version": str("agent version")}, "token"),
		"EnrollResult": obj(map[string]any{"node_id": tInt, "node_name": tStr, "kind": tStr, "credential": tStr, "heartbeat_interval_ms": tInt}),
		"Heartbeat": obj(map[string]any{"load": tInt, "version": tStr, "running": arr(tObject),
			"acks": arr(obj(map[string]any{"id": tInt, "epoch": tInt, "state": tStr}))}),
		"HeartbeatResult": obj(map[string]any{"admin_state": tStr, "heartbeat_interval_ms": tInt, "credential": tStr, "acks": ackResults}),
		"DesiredSet":      obj(map[string]any{"version": tInt, "assignments": arr(tObject), "delta": tBool, "removed": arr(tInt), "acks": ackResults}),
		"Ack":             obj(map[string]any{"epoch": tInt, "state": map[string]any{"type": "string", "enum": []string{"active", "failed", "ended"}}}, "epoch", "state"),
		"AckBatch":        obj(map[string]any{"acks": arr(obj(map[string]any{"id": tInt, "epoch": tInt, "state": tStr}))}),
		"Node": obj(map[string]any{"id": tInt, "name": tStr, "kind": tStr, "address": tStr, "capacity": tInt, "weight": tInt,
			"region": tStr, "description": tStr, "admin_state": tStr, "health": tStr, "health_changed_at": tTime, "load": tInt,
			"reported_load": tInt, "enrolled": tBool, "agent_version": tStr, "last_heartbeat_at": tTimeN, "maintenance": tBool,
			"maintenance_until": tTime, "flapping": tBool}),
		"NodeList": obj(map[string]any{"nodes": arr(ref("Node"))}),
		"NodeAdd": obj(map[string]any{"name": tStr, "kind": map[string]any{"type": "string", "enum": []string{"media", "ivr", "queue", "meeting", "im"}},
			"address": tStr, "capacity": tInt, "weight": tInt, "region": tStr, "description": tStr}, "name", "kind", "address", "capacity"),
		"NodeEdit": obj(map[string]any{"address": tStr, "capacity": tInt, "weight": tInt, "region": tStr, "description": tStr,
			"confirm": map[string]any{"type": "boolean", "description": "accept a capacity below the load (the excess moves)"}}),
		"StateChange": obj(map[string]any{"node": ref("Node"), "moved": tInt, "unplaced": tInt, "moved_to": tObject}),
		"PreviewRequest": obj(map[string]any{"action": map[string]any{"type": "string", "enum": []string{"disable", "drain", "remove", "capacity"}},
			"capacity": map[string]any{"type": "integer", "description": "the new capacity, for the capacity action"}}, "action"),
		"Preview": obj(map[string]any{"node": tStr, "action": tStr, "capacity": tInt, "moves": map[string]any{"type": "object", "additionalProperties": arr(workItem), "description": "items per destination node"},
			"unplaced": arr(workItem), "stays": arr(workItem)}, "moves", "unplaced", "stays"),
		"Maintenance":        maint,
		"MaintenanceList":    obj(map[string]any{"maintenance": arr(ref("Maintenance"))}),
		"MaintenanceRequest": obj(map[string]any{"start": map[string]any{"type": "string", "format": "date-time", "description": "RFC 3339; absent: now"}, "end": tTime, "reason": tStr}, "end", "reason"),
		"JoinTokenRequest":   obj(map[string]any{"node": tStr, "ttl": str("lifetime such as 1h (max 168h)"), "state_dir": tStr}, "node"),
		"APITokenRequest": obj(map[string]any{"name": tStr, "scope": map[string]any{"type": "string", "enum": []string{"read", "admin"}},
			"ttl": str("lifetime such as 720h; absent: no expiry")}, "name"),
		"WorkInput":  obj(map[string]any{"kind": map[string]any{"type": "string", "enum": []string{"call", "ivr", "queue", "meeting", "im"}}, "ref": tStr, "cost": tInt}, "kind", "ref", "cost"),
		"Placement":  obj(map[string]any{"id": tInt, "ref": tStr, "kind": tStr, "cost": tInt, "state": tStr, "node": tStr, "epoch": tInt}),
		"WorkDetail": obj(map[string]any{"work": tObject, "history": arr(obj(map[string]any{"at": tTime, "state": tStr, "node": tStr, "epoch": tInt}))}),
		"EventPage":  obj(map[string]any{"events": arr(tObject), "next_cursor": tStr}),
		"AuditPage":  obj(map[string]any{"audit": arr(tObject), "next_cursor": tStr}),
		"Alert": obj(map[string]any{"id": tInt, "created_at": tTime, "type": tStr, "node": tStr, "state": tStr, "attempts": tInt,
			"last_error": tStr, "sent_at": tTime, "acked_at": tTime, "acked_by": tStr, "ack_note": tStr, "payload": tObject}),
		"AlertPage":     obj(map[string]any{"alerts": arr(ref("Alert")), "next_cursor": tStr}),
		"AckNote":       obj(map[string]any{"note": tStr}, "note"),
		"Settings":      obj(map[string]any{"settings": map[string]any{"type": "object", "additionalProperties": tStr}}),
		"SettingsPatch": map[string]any{"type": "object", "additionalProperties": tStr, "description": "setting name to its new value, as strings"},
		"UserAdd":       obj(map[string]any{"email": tStr, "password": tStr, "role": map[string]any{"type": "string", "enum": []string{"owner", "admin", "viewer"}}}, "email", "password", "role"),
		"UserEdit":      obj(map[string]any{"role": tStr, "disabled": tBool}),
	}
}

var (
	openAPIOnce sync.Once
	openAPIDoc  map[string]any
)

// OpenAPI returns the OpenAPI 3.1 document of the /api/v1 routes.
func OpenAPI(version string) map[string]any {
	openAPIOnce.Do(func() { openAPIDoc = buildOpenAPI() })
	doc := make(map[string]any, len(openAPIDoc))
	for k, v := range openAPIDoc {
		doc[k] = v
	}
	doc["info"] = map[string]any{"title": "Callplane API", "version": version,
		"description": "Admin API (Bearer cpa_… API token: read scope may GET only; admin scope may change) and agent API (Bearer node credential). Errors are {\"error\": \"...\"}."}
	return doc
}

func buildOpenAPI() map[string]any {
	paths := map[string]any{}
	for _, op := range apiOps {
		item, _ := paths["/api/v1"+op.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths["/api/v1"+op.path] = item
		}
		o := map[string]any{
			"summary":     op.summary,
			"operationId": operationID(op),
			"tags":        []string{tag(op)},
		}
		var params []any
		for _, p := range op.params {
			params = append(params, map[string]any{"name": p.name, "in": p.in, "required": p.in == "path",
				"description": p.desc, "schema": map[string]any{"type": p.typ}})
		}
		if len(params) > 0 {
			o["parameters"] = params
		}
		if op.body != "" {
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": ref(op.body)}}}
		}
		errResp := map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": ref("Error")}}}
		o["responses"] = map[string]any{
			op.status: map[string]any{"description": "success", "content": map[string]any{"application/json": map[string]any{"schema": ref(op.result)}}},
			"default": errResp,
		}
		switch op.auth {
		case "":
			o["security"] = []any{}
		case "node":
			o["security"] = []any{map[string]any{"nodeCredential": []string{}}}
		case "read":
			o["security"] = []any{map[string]any{"apiToken": []string{"read"}}, map[string]any{"session": []string{}}}
		case "admin":
			o["security"] = []any{map[string]any{"apiToken": []string{"admin"}}, map[string]any{"session": []string{}}}
		case "owner":
			o["security"] = []any{map[string]any{"session": []string{"owner"}}}
		}
		item[strings.ToLower(op.method)] = o
	}
	return map[string]any{
		"openapi": "3.1.0",
		"servers": []any{map[string]any{"url": "/"}},
		"paths":   paths,
		"components": map[string]any{
			"schemas": schemas(),
			"securitySchemes": map[string]any{
				"apiToken":       map[string]any{"type": "http", "scheme": "bearer", "description": "API token cpa_…, scope read or admin"},
				"nodeCredential": map[string]any{"type": "http", "scheme": "bearer", "description": "a node agent's credential"},
				"session":        map[string]any{"type": "apiKey", "in": "cookie", "name": "__Host-callplane_session"},
			},
		},
	}
}

func tag(op apiOp) string {
	switch op.auth {
	case "", "node":
		if op.path != "/openapi.json" {
			return "agent"
		}
	}
	seg := strings.SplitN(strings.TrimPrefix(op.path, "/"), "/", 2)[0]
	return strings.TrimSuffix(seg, ".json")
}

func operationID(op apiOp) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(op.method))
	for _, seg := range strings.Split(op.path, "/") {
		seg = strings.Trim(seg, "{}")
		for _, part := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '.' || r == '_' }) {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// DocumentedRoutes lists "METHOD /api/v1/path" of every documented
// operation, sorted (for tests).
func DocumentedRoutes() []string {
	out := make([]string, len(apiOps))
	for i, op := range apiOps {
		out[i] = op.method + " /api/v1" + op.path
	}
	sort.Strings(out)
	return out
}

// apiOperations lists the operations for the portal's API page.
func apiOperations() []web.APIOperation {
	out := make([]web.APIOperation, len(apiOps))
	for i, op := range apiOps {
		auth := op.auth
		if auth == "" {
			auth = "none"
		}
		out[i] = web.APIOperation{Method: op.method, Path: "/api/v1" + op.path, Summary: op.summary, Auth: auth}
	}
	return out
}
