package db

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pipe is a transaction on one connection that costs fewer round trips
// than pgx.Tx: its BEGIN goes in the same round trip as its first
// statement, and, when the caller knows which statement is its last, its
// COMMIT (and statements queued to run after the commit, in a transaction
// of their own) in the same round trip as that statement. Postgres runs a
// round trip's statements in order and skips the rest after one fails, so
// a failed statement leaves the transaction uncommitted, as it would
// with a round trip each. On a busy machine every round trip waits for the
// scheduler on both sides; a transaction that others queue behind (a
// placement group) is shorter by two of them.
//
// A Pipe is a dbsqlc.DBTX; use it through InPipe.
type Pipe struct {
	conn  *pgxpool.Conn
	begin bool     // BEGIN goes with the next statement
	after []queued // go after the next statement (COMMIT first)
	// ended says the COMMIT went; err is the first error of the
	// statements sent after a query's rows.
	ended bool
	err   error
}

type queued struct {
	sql  string
	args []any
}

// InPipe runs fn in a Pipe's transaction, committing when fn returns nil
// (with its last statement, if fn asked for that with CommitWithNext, else
// on its own). When fn fails, or a statement sent with its last fails,
// the transaction is rolled back and that error returned. It does not
// retry; wrap it in Retry.
func InPipe(ctx context.Context, pool *pgxpool.Pool, fn func(p *Pipe) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	p := &Pipe{conn: conn, begin: true}
	err = fn(p)
	if err == nil && !p.ended && !p.begin {
		p.ended = true
		_, err = conn.Exec(ctx, "COMMIT")
	}
	if err == nil {
		err = p.err
	}
	if p.open() {
		// Left in a transaction (fn failed): end it before the connection
		// goes back to the pool, or close the connection.
		if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}
	return err
}

// open says whether the connection is in a transaction, failed or not.
func (p *Pipe) open() bool {
	s := p.conn.Conn().PgConn().TxStatus()
	return s == 'T' || s == 'E'
}

// CommitWithNext makes the next statement the transaction's last: the
// COMMIT goes with it, then the statements each then function writes,
// each in a transaction of its own (a notification of what was
// committed, say). then is called with a DBTX that queues what it is
// asked to run; the results of those statements are not read.
func (p *Pipe) CommitWithNext(then ...func(DBTX) error) error {
	p.after = []queued{{sql: "COMMIT"}}
	for _, f := range then {
		var q queuer
		if err := f(&q); err != nil {
			return err
		}
		p.after = append(p.after, q...)
	}
	return nil
}

// DBTX is what sqlc's generated queries run on.
type DBTX interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	Query(context.Context, string, ...any) (pgx.Rows, error)
	QueryRow(context.Context, string, ...any) pgx.Row
}

// queuer is a DBTX that only queues what it is asked to run.
type queuer []queued

func (q *queuer) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	*q = append(*q, queued{sql, args})
	return pgconn.CommandTag{}, nil
}

func (q *queuer) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errors.New("db: only statements whose results are not read can run after a commit")
}

func (q *queuer) QueryRow(context.Context, string, ...any) pgx.Row {
	return errRow{errors.New("db: only statements whose results are not read can run after a commit")}
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// batch is the round trip of the next statement: what goes before it,
// the statement, and what goes after it.
func (p *Pipe) batch(sql string, args []any) (b *pgx.Batch, begin bool, after int) {
	b, begin = &pgx.Batch{}, p.begin
	if begin {
		b.Queue("BEGIN")
	}
	b.Queue(sql, args...)
	for _, q := range p.after {
		b.Queue(q.sql, q.args...)
	}
	after = len(p.after)
	if after > 0 {
		p.ended = true
	}
	p.begin, p.after = false, nil
	return b, begin, after
}

// Query runs sql in the transaction; the statements queued after it are
// read when its rows are closed.
func (p *Pipe) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	b, begin, after := p.batch(sql, args)
	br := p.conn.SendBatch(ctx, b)
	if begin {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &pipeRows{Rows: rows, br: br, after: after, p: p}, nil
}

// Exec runs sql in the transaction, with what goes before and after it.
func (p *Pipe) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	rows, err := p.Query(ctx, sql, args...)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.CommandTag(), rows.Err()
}

// QueryRow runs sql in the transaction and scans its first row.
func (p *Pipe) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := p.Query(ctx, sql, args...)
	if err != nil {
		return errRow{err}
	}
	return pipeRow{rows}
}

type pipeRow struct{ rows pgx.Rows }

func (r pipeRow) Scan(dest ...any) error {
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// pipeRows are a statement's rows; closing them reads the results of the
// statements sent after it, and the first error among those is the
// Pipe's.
type pipeRows struct {
	pgx.Rows
	br     pgx.BatchResults
	after  int
	p      *Pipe
	closed bool
}

func (r *pipeRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	failed := r.Rows.Err() != nil
	for range r.after {
		if _, err := r.br.Exec(); err != nil && !failed && r.p.err == nil {
			r.p.err = err
		}
	}
	if err := r.br.Close(); err != nil && !failed && r.p.err == nil {
		r.p.err = err
	}
}
