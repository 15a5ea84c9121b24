package problem_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/nodes/problem"
)

// throttled is an error with its own wait, as a throttled sign-in is.
type throttled struct{ wait int }

func (e throttled) Error() string   { return "too many sign-in attempts" }
func (e throttled) Unwrap() error   { return problem.ErrThrottled }
func (e throttled) RetryAfter() int { return e.wait }

func TestHTTP(t *testing.T) {
	t.Parallel()
	unreachable := fmt.Errorf("list nodes: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})
	tests := []struct {
		name       string
		err        error
		status     int
		msg        string
		retryAfter int
	}{
		{"field errors", problem.FieldErrors{"name": "is required", "capacity": "must be positive"}, 400, "capacity: must be positive; name: is required", 0},
		{"wrapped field errors show only the fields", fmt.Errorf("add node: %w", problem.FieldErrors{"kind": "unknown"}), 400, "kind: unknown", 0},
		{"invalid", problem.New(problem.ErrInvalid, "bad request"), 400, "bad request", 0},
		{"unauthorized says one thing", problem.New(problem.ErrUnauthorized, "that password is wrong"), 401, "invalid or expired credentials", 0},
		{"unauthorized sentinel", fmt.Errorf("enroll: %w", problem.ErrUnauthorized), 401, "invalid or expired credentials", 0},
		{"forbidden", problem.New(problem.ErrForbidden, "your role does not allow this"), 403, "your role does not allow this", 0},
		{"db not found", fmt.Errorf("node %q: %w", "n1", db.ErrNotFound), 404, `node "n1": not found`, 0},
		{"not found of a kind", problem.New(problem.ErrNotFound, "page not found"), 404, "page not found", 0},
		{"db conflict", fmt.Errorf("%w: nodes_name_key", db.ErrConflict), 409, "already exists: nodes_name_key", 0},
		{"unique violation through db.Translate", db.Translate(&pgconn.PgError{Code: "23505", ConstraintName: "nodes_name_key"}), 409, "already exists: nodes_name_key", 0},
		{"no rows through db.Translate", fmt.Errorf("token: %w", db.Translate(pgx.ErrNoRows)), 404, "token: not found", 0},
		{"conflict of a kind", fmt.Errorf("remove node n1: %w", problem.New(problem.ErrConflict, "node still carries work")), 409, "remove node n1: node still carries work", 0},
		{"taken field is a conflict", problem.Taken("name", "a node named \"n1\" already exists"), 409, `name: a node named "n1" already exists`, 0},
		{"throttled with its wait", throttled{wait: 42}, 429, "too many sign-in attempts", 42},
		{"throttled without a wait", problem.New(problem.ErrThrottled, "slow down"), 429, "slow down", 0},
		{"unavailable of a kind", problem.New(problem.ErrUnavailable, "the server is busy"), 503, "the server is busy", problem.RetryAfterUnavailable},
		{"unreachable database hides the cause", unreachable, 503, "the database is unreachable; try again in a few seconds", problem.RetryAfterUnavailable},
		{"no kind hides the cause", errors.New("pq: relation \"secrets\" does not exist"), 500, "something went wrong on our side; the error has been logged", 0},
		{"retry exhausted is ours", fmt.Errorf("gave up: %w", db.ErrRetry), 500, "something went wrong on our side; the error has been logged", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := problem.HTTPStatus(tt.err); got != tt.status {
				t.Errorf("HTTPStatus = %d, want %d", got, tt.status)
			}
			if got := problem.Message(tt.err); got != tt.msg {
				t.Errorf("Message = %q, want %q", got, tt.msg)
			}
			if got := problem.RetryAfter(tt.err); got != tt.retryAfter {
				t.Errorf("RetryAfter = %d, want %d", got, tt.retryAfter)
			}
		})
	}
}

// TestKinds checks that kinds are found by errors.Is and errors.As, never
// by message: a Taken field is a conflict that still carries its field,
// and the database's translated errors are the kinds themselves.
func TestKinds(t *testing.T) {
	t.Parallel()
	taken := fmt.Errorf("add node: %w", problem.Taken("name", "taken"))
	if !errors.Is(taken, problem.ErrConflict) {
		t.Error("a Taken field is not a conflict")
	}
	var fe problem.FieldErrors
	if !errors.As(taken, &fe) || fe["name"] != "taken" {
		t.Errorf("a Taken field lost its field: %v", fe)
	}
	if problem.Kind(taken) != problem.ErrConflict {
		t.Errorf("Kind(Taken) = %v, want conflict", problem.Kind(taken))
	}
	if problem.ErrNotFound != db.ErrNotFound || problem.ErrConflict != db.ErrConflict {
		t.Error("the database's translated errors are not the kinds")
	}
	// Same text, no kind: the message decides nothing.
	if errors.Is(errors.New(db.ErrConflict.Error()), problem.ErrConflict) {
		t.Error("an error was taken for a conflict by its text")
	}
	if problem.Kind(nil) != nil || problem.HTTPStatus(errors.New("x")) != http.StatusInternalServerError {
		t.Error("an error of no kind is not a 500")
	}
	fe = problem.FieldErrors{}
	fe.Add("a", "first")
	fe.Add("a", "second")
	if fe["a"] != "first" || fe.Err() == nil || (problem.FieldErrors{}).Err() != nil {
		t.Errorf("FieldErrors.Add/Err: %v", fe)
	}
}
