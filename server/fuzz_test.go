package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/safetext"
)

// jsonTargets are every request type a JSON body of the API decodes into.
func jsonTargets() []any {
	return []any{
		&agentproto.EnrollRequest{}, &agentproto.HeartbeatRequest{}, &agentproto.AckRequest{}, &agentproto.AckBatchRequest{},
		&nodeAddRequest{}, &nodes.WorkInput{}, &[]nodes.WorkInput{}, &json.RawMessage{},
	}
}

// FuzzDecodeJSON: whatever the body, every decoder either refuses it with
// a 4xx naming a field, or yields only strings that obey the text rule.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"token":"cpj_x.y","address":"127.0.0.1:5060","version":"1.0"}`,
		`{"load":3,"version":"v\u0000","running":[{"id":1,"epoch":2}]}`,
		`{"acks":[{"id":1,"epoch":1,"state":"active"}]}`,
		`{"kind":"call","ref":"a","cost":1}garbage`,
		`[{"kind":"call","ref":"a","cost":1},{"kind":"ivr","ref":"b","cost":2}]`,
		`{"name":"n","weight":-5,"unknown":1}`,
		"{\"name\":\"\xff\"}",
		`{"description":"line\nline","note":"\u0007"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, target := range jsonTargets() {
			v := reflect.New(reflect.TypeOf(target).Elem()).Interface()
			err := decodeStrict(data, v)
			if err != nil {
				var ie *inputError
				if !errors.As(err, &ie) || ie.status < 400 || ie.status > 499 || ie.field == "" {
					t.Fatalf("%T: refusal %v is not a 4xx naming a field", v, err)
				}
				continue
			}
			if !utf8.Valid(data) {
				t.Fatalf("%T: accepted invalid UTF-8", v)
			}
			assertStrings(t, reflect.ValueOf(v))
		}
	})
}

// assertStrings fails on any string a multi-line field could not hold.
func assertStrings(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			assertStrings(t, v.Elem())
		}
	case reflect.String:
		if msg := safetext.Check(v.String(), 0, true); msg != "" {
			t.Fatalf("accepted %q: %s", v.String(), msg)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		for i := range v.Len() {
			assertStrings(t, v.Index(i))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				assertStrings(t, v.Field(i))
			}
		}
	}
}

// FuzzFormAndQuery: the edge's form and query parser either refuses a
// request with a 4xx naming a field, or lets through only values that
// obey the text rule.
func FuzzFormAndQuery(f *testing.F) {
	for _, s := range [][2]string{
		{"email=a%40b.c&password=secret", "next=%2Fnodes"},
		{"name=a%00b", "q=%FF"},
		{"description=one%0Atwo", "since=0&wait=30s"},
		{"next=%2F%09%2Fevil", "x=%zz"},
		{strings.Repeat("a=b&", 50), "kind=%C3%28"},
	} {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		req := httptest.NewRequest(http.MethodPost, "/nodes", strings.NewReader(string(body)))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Body = http.MaxBytesReader(httptest.NewRecorder(), req.Body, DefaultBodyLimit)
		if ie := checkRequestText(req); ie != nil {
			if ie.status < 400 || ie.status > 499 || ie.field == "" {
				t.Fatalf("refusal %v is not a 4xx naming a field", ie)
			}
			return
		}
		for k, vs := range req.Form {
			for _, v := range vs {
				if msg := safetext.Check(v, 0, true); msg != "" || !utf8.ValidString(k) {
					t.Fatalf("accepted %s=%q: %s", k, v, msg)
				}
			}
		}
	})
}
