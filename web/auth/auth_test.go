package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/web/auth"
)

const password = "correct horse battery staple"

func setup(t *testing.T) (*auth.Service, *pgxpool.Pool, auth.User) {
	t.Helper()
	pool := dbtest.New(t)
	s := auth.NewService(pool, nil)
	owner, err := s.Setup(context.Background(), s.SetupCode(), "owner@example.com", password, "127.0.0.1")
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	return s, pool, owner
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSetupOnlyOnce(t *testing.T) {
	t.Parallel()
	s, _, _ := setup(t)
	if _, err := s.Setup(context.Background(), s.SetupCode(), "second@example.com", password, "127.0.0.1"); !errors.Is(err, auth.ErrSetupDone) {
		t.Fatalf("second setup: %v", err)
	}
}

// A session lives until logout, idle timeout or the account is disabled.
func TestSessions(t *testing.T) {
	t.Parallel()
	s, pool, owner := setup(t)
	ctx := context.Background()
	token, u, err := s.Login(ctx, "owner@example.com", password, "10.0.0.1", "test")
	if err != nil || u.ID != owner.ID {
		t.Fatalf("login: %v %+v", err, u)
	}
	if got, err := s.Session(ctx, token); err != nil || got.Email != "owner@example.com" || got.Role != auth.RoleOwner {
		t.Fatalf("session: %+v %v", got, err)
	}
	if _, err := s.Session(ctx, token+"x"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("forged token: %v", err)
	}
	// Only the hash of the token is stored.
	if n := count(t, pool, "SELECT count(*) FROM sessions WHERE encode(id_hash, 'escape') LIKE '%' || $1 || '%'", token); n != 0 {
		t.Fatal("the session token is stored in clear")
	}
	if err := s.Logout(ctx, token, u, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, token); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("after logout: %v", err)
	}

	// Idle timeout: with a timeout shorter than any gap, the next use ends it.
	token, _, err = s.Login(ctx, "owner@example.com", password, "10.0.0.1", "test")
	if err != nil {
		t.Fatal(err)
	}
	s.IdleTimeout = time.Nanosecond
	if _, err := s.Session(ctx, token); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("idle session: %v", err)
	}
	s.IdleTimeout = time.Hour

	// Disabling an account ends its sessions.
	admin, err := s.AddUser(ctx, "owner@example.com", "127.0.0.1", "admin@example.com", password, auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	adminToken, _, err := s.Login(ctx, "admin@example.com", password, "10.0.0.1", "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled(ctx, owner, "127.0.0.1", admin.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Session(ctx, adminToken); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("session of a disabled account: %v", err)
	}
	if _, _, err := s.Login(ctx, "admin@example.com", password, "10.0.0.1", "test"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("login of a disabled account: %v", err)
	}
}

// The last active owner can be neither demoted nor disabled; with a second
// owner, either can.
func TestLastOwnerGuard(t *testing.T) {
	t.Parallel()
	s, pool, owner := setup(t)
	ctx := context.Background()
	var fe problem.FieldErrors
	if err := s.SetRole(ctx, owner, "127.0.0.1", owner.ID, auth.RoleAdmin); !errors.As(err, &fe) || fe["role"] == "" {
		t.Fatalf("demoting the last owner: %v", err)
	}
	if err := s.SetDisabled(ctx, owner, "127.0.0.1", owner.ID, true); !errors.As(err, &fe) {
		t.Fatalf("disabling the last owner: %v", err)
	}
	if n := count(t, pool, "SELECT count(*) FROM users WHERE role = 'owner' AND disabled_at IS NULL"); n != 1 {
		t.Fatal("the last owner was changed")
	}
	// An admin cannot make an owner.
	admin, err := s.AddUser(ctx, owner.Email, "127.0.0.1", "admin@example.com", password, auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole(ctx, admin, "127.0.0.1", admin.ID, auth.RoleOwner); !errors.As(err, &fe) {
		t.Fatalf("an admin made an owner: %v", err)
	}
	if err := s.SetRole(ctx, owner, "127.0.0.1", admin.ID, auth.RoleOwner); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole(ctx, owner, "127.0.0.1", owner.ID, auth.RoleAdmin); err != nil {
		t.Fatalf("demoting one of two owners: %v", err)
	}
	if n := count(t, pool, "SELECT count(*) FROM audit_log WHERE action = 'user.role' AND result = 'ok'"); n != 2 {
		t.Fatalf("%d role changes audited, want 2", n)
	}
}
