package accounts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/problem"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

const (
	ownerEmail = "owner@example.com"
	password   = "correct horse battery staple"
)

// env is one test's account service on its own database, with the first
// owner created by setup.
type env struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	s     *accounts.Service
	owner accounts.User
	logs  *syncBuffer
}

func setup(t *testing.T) *env {
	t.Helper()
	e := fresh(t)
	owner, err := e.s.Setup(e.ctx, e.s.SetupCode(), ownerEmail, password, "127.0.0.1")
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	e.owner = owner.User
	return e
}

// fresh is an account service on an empty database (no owner yet).
func fresh(t *testing.T) *env {
	t.Helper()
	pool := dbtest.New(t)
	logs := &syncBuffer{}
	s := accounts.NewService(pool, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return &env{t: t, ctx: context.Background(), pool: pool, s: s, logs: logs}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatal(err)
	}
}

// audits counts audit rows of an action with a result.
func (e *env) audits(action, result string) int {
	e.t.Helper()
	return e.count("SELECT count(*) FROM audit_log WHERE action = $1 AND result = $2", action, result)
}

func (e *env) login(email, pw, addr string) (string, error) {
	token, _, err := e.s.Login(e.ctx, email, pw, addr, "test browser")
	return token, err
}

func (e *env) mustLogin(email, pw, addr string) string {
	e.t.Helper()
	token, err := e.login(email, pw, addr)
	if err != nil {
		e.t.Fatalf("sign-in of %s from %s: %v", email, addr, err)
	}
	return token
}

func (e *env) addUser(email, role string) accounts.User {
	e.t.Helper()
	a, err := e.s.AddUser(e.ctx, ownerEmail, "127.0.0.1", email, password, role)
	if err != nil {
		e.t.Fatalf("add %s: %v", email, err)
	}
	return a.User
}

// noSecrets fails when a secret shows in the audit log or the service's
// log.
func (e *env) noSecrets(secrets ...string) {
	e.t.Helper()
	for _, s := range secrets {
		if n := e.count("SELECT count(*) FROM audit_log WHERE concat_ws(' ', actor, action, target, result, source_addr, detail) LIKE '%' || $1 || '%'", s); n != 0 {
			e.t.Errorf("a secret is in %d audit rows", n)
		}
		if bytes.Contains(e.logs.Bytes(), []byte(s)) {
			e.t.Error("a secret is in the log")
		}
	}
}

// wantThrottled fails unless err is a throttled refusal with a wait.
func wantThrottled(t *testing.T, err error, what string) {
	t.Helper()
	var te *accounts.ThrottledError
	if !errors.Is(err, accounts.ErrThrottled) || !errors.As(err, &te) || te.Wait <= 0 {
		t.Fatalf("%s: got %v, want a throttled refusal with a wait", what, err)
	}
}

// wantField fails unless err is field errors naming field.
func wantField(t *testing.T, err error, field, what string) problem.FieldErrors {
	t.Helper()
	var fe problem.FieldErrors
	if !errors.As(err, &fe) || fe[field] == "" {
		t.Fatalf("%s: got %v, want a message on %q", what, err, field)
	}
	return fe
}

// waitFor polls cond for up to a minute: a bound for busy machines, not
// a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func addr(i int) string { return fmt.Sprintf("203.0.113.%d", i) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}
