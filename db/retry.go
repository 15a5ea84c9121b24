package db

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TxAttempts bounds how often Retry runs a transaction that keeps failing
// with a Retryable error. It is the one retry policy of Callplane's
// database writes: callers do not loop around it.
const TxAttempts = 20

// Retry runs fn until it returns nil or an error that is not Retryable,
// at most TxAttempts times. Between attempts it waits a short, growing,
// jittered pause (1-4 ms times the attempt number), so transactions that
// collided do not collide again in step. fn must re-read everything it
// decides on: each attempt is a fresh transaction.
func Retry(ctx context.Context, fn func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(attempt)
		if err == nil || !Retryable(err) {
			return err
		}
		if attempt >= TxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		t := time.NewTimer(time.Duration(attempt*(1+rand.IntN(4))) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// InTx runs fn in a transaction, committing when fn returns nil. It does
// not retry; see InTxRetry.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, pool, fn)
}

// InTxRetry runs fn in a transaction under the Retry policy: when Postgres
// rolls it back for a deadlock, a serialization failure or a lock timeout,
// or fn returns ErrRetry, it runs again in a new transaction.
func InTxRetry(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	return Retry(ctx, func(int) error { return InTx(ctx, pool, fn) })
}

// Rollback runs fn in a transaction that is always rolled back: what fn
// computes is kept, what it writes is not. Previews use it to run the
// very code of an action without its effects.
func Rollback(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // rolling back is the point
	return fn(tx)
}
