package db

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNotFound is returned when a row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a unique constraint is violated.
	ErrConflict = errors.New("already exists")
	// ErrRetry says a transaction decided on a state that changed before
	// it could act on it (a plan that no longer holds under the locks);
	// it rolled back and may run again. Retryable reports it.
	ErrRetry = errors.New("the state changed under the transaction; run it again")
)

// The Postgres error codes Callplane acts on, named once
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	codeLockNotAvailable     = "55P03"
)

// Translate maps pgx errors to the sentinel errors above; other errors are
// returned unchanged.
func Translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if code(err) == codeUniqueViolation {
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
	}
	return err
}

// IsNotFound reports whether err means a row does not exist, translated
// (ErrNotFound) or not (pgx.ErrNoRows).
func IsNotFound(err error) bool {
	return errors.Is(Translate(err), ErrNotFound)
}

// Retryable reports an error after which the transaction was rolled back
// and running it again may succeed: a deadlock Postgres broke, a
// serialization failure, a lock not granted within the transaction's
// lock_timeout, or ErrRetry.
func Retryable(err error) bool {
	if errors.Is(err, ErrRetry) {
		return true
	}
	switch code(err) {
	case codeSerializationFailure, codeDeadlockDetected, codeLockNotAvailable:
		return true
	}
	return false
}

func code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
