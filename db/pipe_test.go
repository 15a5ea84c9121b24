package db_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbtest"
)

// A Pipe's transaction is a transaction: what its statements write is
// committed together or not at all, its COMMIT goes with the statement the
// caller names last and the statements queued after the COMMIT run only
// when it did; a failure is rolled back on its connection, which the pool
// then keeps.
func TestPipeCommitsWholeOrNothing(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	// One connection: a transaction left open would be the next test's.
	one, err := pgxpool.New(t.Context(), pool.Config().ConnString()+"&pool_max_conns=1")
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	ctx := context.Background()
	if _, err := one.Exec(ctx, `CREATE TABLE pipe_t (k text PRIMARY KEY, v int NOT NULL CHECK (v > 0))`); err != nil {
		t.Fatal(err)
	}
	count := func(where string) int {
		t.Helper()
		var n int
		if err := one.QueryRow(ctx, `SELECT count(*) FROM pipe_t WHERE `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	insert := func(p *db.Pipe, k string, v int) error {
		_, err := p.Exec(ctx, `INSERT INTO pipe_t VALUES ($1, $2)`, k, v)
		return err
	}
	after := func(k string) func(db.DBTX) error {
		return func(q db.DBTX) error {
			_, err := q.Exec(ctx, `INSERT INTO pipe_t VALUES ($1, 1)`, k)
			return err
		}
	}

	// Committed with the last statement, then the statement after it.
	err = db.InPipe(ctx, one, func(p *db.Pipe) error {
		if err := insert(p, "a", 1); err != nil {
			return err
		}
		var n int
		if err := p.QueryRow(ctx, `SELECT count(*) FROM pipe_t`).Scan(&n); err != nil || n != 1 {
			t.Errorf("the transaction sees %d rows of its own (err %v), want 1", n, err)
		}
		if err := p.CommitWithNext(after("a-after")); err != nil {
			return err
		}
		return insert(p, "b", 2)
	})
	if err != nil || count(`k IN ('a', 'b', 'a-after')`) != 3 {
		t.Fatalf("InPipe: %v; rows a, b, a-after: %d, want 3", err, count(`k IN ('a', 'b', 'a-after')`))
	}

	// The last statement fails: nothing of the transaction stays, and
	// what was queued after the COMMIT does not run.
	err = db.InPipe(ctx, one, func(p *db.Pipe) error {
		if err := insert(p, "c", 1); err != nil {
			return err
		}
		if err := p.CommitWithNext(after("c-after")); err != nil {
			return err
		}
		return insert(p, "d", -1) // breaks the check
	})
	if err == nil {
		t.Fatal("a failed last statement was not an error")
	}
	if n := count(`k IN ('c', 'd', 'c-after')`); n != 0 {
		t.Fatalf("%d rows of a failed transaction stayed", n)
	}

	// The caller fails after a statement: rolled back.
	boom := errors.New("boom")
	err = db.InPipe(ctx, one, func(p *db.Pipe) error {
		if err := insert(p, "e", 1); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || count(`k = 'e'`) != 0 {
		t.Fatalf("InPipe: %v, rows e %d: want boom and none", err, count(`k = 'e'`))
	}

	// No CommitWithNext: committed on its own.
	if err := db.InPipe(ctx, one, func(p *db.Pipe) error { return insert(p, "f", 1) }); err != nil || count(`k = 'f'`) != 1 {
		t.Fatalf("InPipe: %v, rows f %d, want 1", err, count(`k = 'f'`))
	}
	// The failed transactions were rolled back on their connection, not
	// left to the pool, which would have closed it and opened another.
	if n := one.Stat().NewConnsCount(); n != 1 {
		t.Fatalf("%d connections opened for one: a failed transaction's connection was dropped, not rolled back", n)
	}
}
