package nodes

import (
	"errors"

	"github.com/callplane/callplane/nodes/problem"
)

// The domain's errors, each of a problem kind so the portal and the API
// answer them alike (problem.HTTPStatus).
var (
	// ErrNotFound: the node, token or work item does not exist.
	ErrNotFound = problem.ErrNotFound
	// ErrConflict: a name or ref is already taken.
	ErrConflict = problem.ErrConflict
	// ErrUnauthorized is the one answer to every failed token or
	// credential check, so a caller learns nothing about why.
	ErrUnauthorized = problem.ErrUnauthorized
	// ErrForbidden: the node is disabled and may not take part.
	ErrForbidden = problem.New(problem.ErrForbidden, "node is disabled")
	// ErrStaleEpoch: the work moved since the caller last saw it.
	ErrStaleEpoch = problem.New(problem.ErrConflict, "stale epoch: the work has moved")
	// ErrBusy: the node still carries work and the caller did not ask to move it.
	ErrBusy = problem.New(problem.ErrConflict, "node still carries work")
	// ErrNotLeader: this instance no longer holds the leader lease.
	ErrNotLeader = errors.New("not the leader")
)
