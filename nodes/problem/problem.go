package problem

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/callplane/callplane/db"
)

// The kinds. Each is a sentinel error: errors.Is(err, ErrConflict) reports
// an error of that kind, whatever its message.
var (
	// ErrInvalid: the input is wrong (400). FieldErrors are of this kind.
	ErrInvalid = errors.New("invalid input")
	// ErrUnauthorized: a credential, token or session is missing, wrong or
	// expired (401). Its message is the one every such error shows, so a
	// caller learns nothing about why.
	ErrUnauthorized = errors.New("invalid or expired credentials")
	// ErrForbidden: the caller is known but may not do this (403).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: what was asked for does not exist (404). It is the
	// database's translated "no rows".
	ErrNotFound = db.ErrNotFound
	// ErrConflict: the request collides with the current state — a name
	// taken, work moved, a node still busy (409). It is the database's
	// translated unique violation.
	ErrConflict = db.ErrConflict
	// ErrThrottled: too many attempts; come back later (429).
	ErrThrottled = errors.New("too many attempts; try again later")
	// ErrUnavailable: the service cannot answer now but may soon (503).
	// An unreachable database is of this kind too (see db.Unreachable).
	ErrUnavailable = errors.New("temporarily unavailable; try again in a few seconds")
)

// New returns an error of kind (one of the Err* kinds above) that reads
// msg: errors.Is(New(ErrConflict, "node still carries work"), ErrConflict)
// is true.
func New(kind error, msg string) error { return &kindError{kind: kind, msg: msg} }

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }

// Is reports the error's kind.
func (e *kindError) Is(target error) bool { return target == e.kind }

// FieldErrors maps an input field to what is wrong with it. It is an
// error of kind ErrInvalid.
type FieldErrors map[string]string

// Error lists the fields in name order: "capacity: …; name: …".
func (e FieldErrors) Error() string {
	parts := make([]string, 0, len(e))
	for _, k := range slices.Sorted(maps.Keys(e)) {
		parts = append(parts, k+": "+e[k])
	}
	return strings.Join(parts, "; ")
}

// Is makes FieldErrors of kind ErrInvalid.
func (e FieldErrors) Is(target error) bool { return target == ErrInvalid }

// Add records a message for field unless it already has one.
func (e FieldErrors) Add(field, msg string) {
	if _, ok := e[field]; !ok {
		e[field] = msg
	}
}

// Err returns e as an error, or nil when it is empty.
func (e FieldErrors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// Taken is a conflict a form shows at its field: a value that must be
// unique (a node's name) is in use. It is of kind ErrConflict, so the API
// answers 409, and errors.As finds its FieldErrors, so the portal shows
// the message beside the field.
func Taken(field, msg string) error { return takenError{FieldErrors{field: msg}} }

type takenError struct{ fe FieldErrors }

func (e takenError) Error() string        { return e.fe.Error() }
func (e takenError) Is(target error) bool { return target == ErrConflict }
func (e takenError) Unwrap() error        { return e.fe }

// kinds in the order they are tested: the first that err is, is its kind.
// ErrInvalid comes last, so a Taken field (a conflict that also carries
// FieldErrors) is a conflict.
var kinds = []struct {
	kind   error
	status int
}{
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrForbidden, http.StatusForbidden},
	{ErrNotFound, http.StatusNotFound},
	{ErrConflict, http.StatusConflict},
	{ErrThrottled, http.StatusTooManyRequests},
	{ErrUnavailable, http.StatusServiceUnavailable},
	{ErrInvalid, http.StatusBadRequest},
}

// Kind returns err's kind (one of the Err* kinds), or nil for an error of
// no kind: a failure on our side. An unreachable database is
// ErrUnavailable.
func Kind(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if errors.Is(err, k.kind) {
			return k.kind
		}
	}
	if db.Unreachable(err) {
		return ErrUnavailable
	}
	return nil
}

// What a failure on our side and an unreachable database say; the cause
// goes to the log.
const (
	msgInternal    = "something went wrong on our side; the error has been logged"
	msgUnreachable = "the database is unreachable; try again in a few seconds"
)

// HTTPStatus is the status err answers with: its kind's, or 500.
func HTTPStatus(err error) int {
	kind := Kind(err)
	for _, k := range kinds {
		if k.kind == kind {
			return k.status
		}
	}
	return http.StatusInternalServerError
}

// Message is what a person may see of err: its own text for errors of a
// kind, the field list for FieldErrors, one generic text for every
// credential failure, and never the cause of a 5xx of no kind (an
// unreachable database says so, and nothing more).
func Message(err error) string {
	var fe FieldErrors
	switch kind := Kind(err); {
	case kind == nil:
		return msgInternal
	case kind == ErrUnauthorized:
		return ErrUnauthorized.Error()
	case kind == ErrInvalid && errors.As(err, &fe):
		return fe.Error()
	case kind == ErrUnavailable && !errors.Is(err, ErrUnavailable):
		return msgUnreachable
	}
	return err.Error()
}

// RetryAfterUnavailable is the Retry-After, in seconds, of every 503.
const RetryAfterUnavailable = 5

// RetryAfter is how many seconds a client should wait before trying
// again after err, or 0 when waiting would not help: the error's own wait
// when it has one (a RetryAfter() int method, as a throttled sign-in
// has), RetryAfterUnavailable for a 503.
func RetryAfter(err error) int {
	var w interface{ RetryAfter() int }
	if errors.As(err, &w) {
		return w.RetryAfter()
	}
	if HTTPStatus(err) == http.StatusServiceUnavailable {
		return RetryAfterUnavailable
	}
	return 0
}

// RecordCause hands the cause of a 5xx answer to the request log, when w
// is the server's logged writer (it has a RecordCause(error) method), and
// reports whether it did.
func RecordCause(w http.ResponseWriter, err error) bool {
	if rec, ok := w.(interface{ RecordCause(error) }); ok {
		rec.RecordCause(err)
		return true
	}
	return false
}
