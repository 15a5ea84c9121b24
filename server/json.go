package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/callplane/callplane/web"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": "..."} with the status the error maps to.
func writeError(w http.ResponseWriter, err error) {
	status, msg := web.StatusOf(err)
	writeJSON(w, status, map[string]string{"error": msg})
}

var errBadJSON = errors.New("malformed JSON body")

// readJSON decodes a JSON body of at most 1 MiB.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		return errBadJSON
	}
	return nil
}

func badJSON(w http.ResponseWriter) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": errBadJSON.Error()})
}
