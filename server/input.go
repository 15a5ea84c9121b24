package server

import (
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/callplane/callplane/nodes/safetext"
	"github.com/callplane/callplane/web"
)

// The text rules of the edge. Every text value a request carries — path,
// query parameters, form fields, JSON strings — is checked here, once,
// before any handler runs: valid UTF-8, no control characters, a length
// in runes. Handlers and the domain add the rules of each field (a node
// name's alphabet, a ref's, an email address's shape) on top.

type textRule struct {
	maxRunes  int
	multiline bool
}

// defaultRule covers every field not listed in fieldRules: one line.
var defaultRule = textRule{maxRunes: 1000}

// fieldRules are the fields that differ from defaultRule, by their last
// name (a form field, a query parameter, a JSON key).
var fieldRules = map[string]textRule{
	"description": {maxRunes: 500, multiline: true},
	"reason":      {maxRunes: 500, multiline: true},
	"note":        {maxRunes: 1000, multiline: true},
	"password":    {maxRunes: 256},
	"alert_to":    {maxRunes: 4000},
	"smtp_url":    {maxRunes: 2000},
	"version":     {maxRunes: 200},
}

// checkField applies the rule of the field named by path (its last part).
func checkField(path, v string) string {
	name := path
	if i := strings.LastIndexAny(name, ".]"); i >= 0 {
		name = name[i+1:]
	}
	rule, ok := fieldRules[name]
	if !ok {
		rule = defaultRule
	}
	return safetext.Check(v, rule.maxRunes, rule.multiline)
}

// validText refuses a request whose path, query or form holds text that
// breaks the rules, with 400 naming the field (413 for an oversized form,
// 415 for a multipart body, which no route takes). JSON bodies are checked
// where they are decoded (decodeStrict), against their request type.
func validText(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkRequestText(r); err != nil {
			refuse(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func checkRequestText(r *http.Request) *inputError {
	if msg := safetext.Check(r.URL.Path, 2000, false); msg != "" {
		return badInput("path", msg)
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return badInput("query", "is not a valid query string")
	}
	if e := checkValues("query parameter ", query); e != nil {
		return e
	}
	if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "multipart/form-data":
		return &inputError{status: http.StatusUnsupportedMediaType, field: "body", msg: "multipart bodies are not accepted; send application/x-www-form-urlencoded"}
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			if ie := bodyError(err); ie.status != http.StatusBadRequest {
				return ie
			}
			return badInput("body", "is not a valid form")
		}
		return checkValues("", r.PostForm)
	}
	return nil
}

func checkValues(prefix string, values map[string][]string) *inputError {
	for k, vs := range values {
		if msg := safetext.Check(k, 100, false); msg != "" {
			return badInput(prefix+"field name", msg)
		}
		field := prefix + k
		if k == "" {
			field = prefix + "(unnamed field)"
		}
		for _, v := range vs {
			if msg := checkField(k, v); msg != "" {
				return badInput(field, msg)
			}
		}
	}
	return nil
}

// refuse answers an input error: JSON under /api/, the portal's error
// page elsewhere.
func refuse(w http.ResponseWriter, r *http.Request, e *inputError) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		writeJSON(w, e.status, map[string]string{"error": e.Error(), "field": e.field})
		return
	}
	web.WriteError(w, r, e.status, e.Error())
}
