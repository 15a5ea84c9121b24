package nodes

import (
	"errors"
	"sort"
	"strings"

	"github.com/callplane/callplane/db"
)

var (
	// ErrNotFound: the node, token or work item does not exist.
	ErrNotFound = db.ErrNotFound
	// ErrConflict: a name or ref is already taken.
	ErrConflict = db.ErrConflict
	// ErrUnauthorized is the one answer to every failed token or
	// credential check, so a caller learns nothing about why.
	ErrUnauthorized = errors.New("invalid or expired credentials")
	// ErrForbidden: the node is disabled and may not take part.
	ErrForbidden = errors.New("node is disabled")
	// ErrStaleEpoch: the work moved since the caller last saw it.
	ErrStaleEpoch = errors.New("stale epoch: the work has moved")
	// ErrBusy: the node still carries work and the caller did not ask to move it.
	ErrBusy = errors.New("node still carries work")
	// ErrNotLeader: this instance no longer holds the leader lease.
	ErrNotLeader = errors.New("not the leader")
)

// FieldErrors maps an input field to what is wrong with it.
type FieldErrors map[string]string

func (e FieldErrors) Error() string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+e[k])
	}
	return strings.Join(parts, "; ")
}

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
