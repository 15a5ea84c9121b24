// Package dbtest gives tests a real, throwaway Postgres: one local server
// per test binary, migrated once into a template database, and a fresh
// database cloned from the template for every test.
package dbtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/localpg"
)

const template = "callplane_template"

var (
	once    sync.Once
	server  *localpg.Server
	rootDir string
	initErr error
	counter atomic.Int64
)

// Main runs the tests of a package and stops the shared server after
// them. Call it from TestMain: os.Exit(dbtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if server != nil {
		server.Stop()
		os.RemoveAll(rootDir)
	}
	return code
}

func start() {
	ctx := context.Background()
	rootDir, initErr = os.MkdirTemp("", "cpdb")
	if initErr != nil {
		return
	}
	// The server may run as the postgres user, which must enter the dir.
	if initErr = os.Chmod(rootDir, 0o755); initErr != nil {
		return
	}
	server, initErr = localpg.Start(ctx, localpg.Options{Dir: filepath.Join(rootDir, "pg"), Fast: true})
	if initErr != nil {
		return
	}
	if initErr = server.EnsureDatabase(ctx, template); initErr != nil {
		return
	}
	pool, err := db.Open(ctx, server.URL(template), 4)
	if err != nil {
		initErr = err
		return
	}
	defer pool.Close()
	initErr = db.Migrate(ctx, pool, nil)
}

// URL creates a fresh migrated database for the test and returns its URL.
// The database is dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(start)
	if initErr != nil {
		t.Fatalf("test postgres: %v", initErr)
	}
	ctx := context.Background()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), counter.Add(1))
	admin, err := pgx.Connect(ctx, server.URL("postgres"))
	if err != nil {
		t.Fatalf("connect test postgres: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+template); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, server.URL("postgres"))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return server.URL(name)
}

// New returns a pool on a fresh migrated database, closed when the test ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := db.Open(context.Background(), URL(t), 20)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
