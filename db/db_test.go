package db_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

func TestMigratedAndTranslate(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	ctx := context.Background()
	_, err := db.Q.UserGetByEmail(ctx, pool, "nobody@example.com")
	if !errors.Is(db.Translate(err), db.ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
	if _, err := db.Q.UserInsert(ctx, pool, dbsqlcUser("a@example.com")); err != nil {
		t.Fatal(err)
	}
	_, err = db.Q.UserInsert(ctx, pool, dbsqlcUser("a@example.com"))
	if !errors.Is(db.Translate(err), db.ErrConflict) {
		t.Fatalf("want ErrConflict, got %v", err)
	}
	// Migrating twice is a no-op.
	if err := db.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
}
