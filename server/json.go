package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/safetext"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": "..."} with the status the error maps to.
// A 5xx keeps its cause for the request log (the client sees only a
// generic message), and a 503 says when to come back.
func writeError(w http.ResponseWriter, err error) {
	status := problem.HTTPStatus(err)
	if status >= 500 {
		problem.RecordCause(w, err)
	}
	if s := problem.RetryAfter(err); s > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(s))
	}
	writeJSON(w, status, map[string]string{"error": problem.Message(err)})
}

// inputError is a request refused at the edge: the status to answer and
// the field (or "body", "path", "query parameter X") it is about.
type inputError struct {
	status int
	field  string
	msg    string
}

func (e *inputError) Error() string { return e.field + ": " + e.msg }

func badInput(field, msg string) *inputError {
	return &inputError{status: http.StatusBadRequest, field: field, msg: msg}
}

// decodeStrict decodes one JSON value from data into v and refuses what a
// lenient decoder lets through: fields v does not have, anything after the
// value, bytes that are not UTF-8 (encoding/json would silently turn them
// into U+FFFD), and strings with control characters or over their field's
// length. Errors name the field.
func decodeStrict(data []byte, v any) error {
	if !utf8.Valid(data) {
		return badInput(jsonPathAt(data, invalidUTF8At(data)), "is not valid UTF-8 text")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badInput("body", "unexpected data after the JSON value")
	}
	return checkStrings(reflect.ValueOf(v), "")
}

// readJSON reads and strictly decodes a JSON request body. The body's size
// and read time are bounded by the route's limits (limits.go). A body
// declared as anything but JSON is refused with 415 naming the header
// (curl's -d alone declares a form, whose body the input checks have
// already read as one); no Content-Type at all is taken as JSON.
func readJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			return &inputError{status: http.StatusUnsupportedMediaType, field: "Content-Type", msg: "must be application/json"}
		}
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return bodyError(err)
	}
	return decodeStrict(data, v)
}

// bodyError turns a failed body read into the answer: 413 for a body over
// the route's limit, 408 for one that arrived too slowly.
func bodyError(err error) *inputError {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return &inputError{status: http.StatusRequestEntityTooLarge, field: "body", msg: fmt.Sprintf("must be at most %d bytes", tooBig.Limit)}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &inputError{status: http.StatusRequestTimeout, field: "body", msg: "was not received in time"}
	}
	return badInput("body", "could not be read")
}

func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return badInput(field, "must be a JSON "+jsonKind(typeErr.Type))
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badInput("body", "is not a JSON value")
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if f = strings.Trim(f, `"`); f == "" || safetext.Check(f, 100, false) != "" {
			return badInput("body", "holds a field that is not known")
		}
		return badInput(f, "is not a known field")
	}
	return badInput("body", "is not valid JSON for this request")
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "whole number in range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative whole number in range"
	}
	return "number"
}

// checkStrings applies the text rule to every string held in v, naming
// the first bad one by its JSON path (acks[2].state).
func checkStrings(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return checkStrings(v.Elem(), path)
		}
	case reflect.String:
		if msg := checkField(path, v.String()); msg != "" {
			return badInput(path, msg)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 { // json.RawMessage: decoded again strictly later
			return nil
		}
		for i := range v.Len() {
			if err := checkStrings(v.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			k := fmt.Sprint(iter.Key().Interface())
			if msg := checkField("key", k); msg != "" {
				return badInput(joinPath(path, "key"), msg)
			}
			if err := checkStrings(iter.Value(), joinPath(path, k)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			sub := joinPath(path, name)
			if f.Anonymous {
				sub = path
			}
			if err := checkStrings(v.Field(i), sub); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// invalidUTF8At is the offset of the first byte of data that is not part
// of a valid UTF-8 sequence.
func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// jsonPathAt names the JSON field being read at offset off, by walking
// the tokens before it: "acks[2].state", or "body" outside any field.
func jsonPathAt(data []byte, off int) string {
	dec := json.NewDecoder(bytes.NewReader(data[:off]))
	type frame struct {
		array bool
		index int
		key   string
		// wantKey: inside an object, the next string is a key.
		wantKey bool
	}
	var stack []frame
	name := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.array {
				b.WriteString("[" + strconv.Itoa(f.index) + "]")
				continue
			}
			if f.key != "" {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			}
		}
		if b.Len() == 0 {
			return "body"
		}
		return b.String()
	}
	// value is called after each complete value inside a container.
	value := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		if top.array {
			top.index++
		} else {
			top.wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			// The invalid bytes sit inside a string: a key when the
			// object waits for one.
			if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].wantKey {
				stack[n-1].key = "key"
			}
			return name()
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, frame{wantKey: true})
			case '[':
				stack = append(stack, frame{array: true})
			default:
				stack = stack[:len(stack)-1]
				value()
			}
		case string:
			if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].wantKey {
				stack[n-1].key, stack[n-1].wantKey = t, false
				continue
			}
			value()
		default:
			value()
		}
	}
}

// badJSON answers a refused JSON body: 400 (413, 408) naming the field.
func badJSON(w http.ResponseWriter, err error) {
	var ie *inputError
	if !errors.As(err, &ie) {
		ie = badInput("body", "is not valid JSON for this request")
	}
	writeJSON(w, ie.status, map[string]string{"error": ie.Error(), "field": ie.field})
}
