package localpg_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/localpg"
)

// A second Start on a running cluster (a CLI command next to "serve")
// uses it and leaves it running when done.
func TestStartReusesRunningCluster(t *testing.T) {
	root, err := os.MkdirTemp("", "cplpg")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := filepath.Join(root, "pg")
	first, err := localpg.Start(ctx, localpg.Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Stop()
	second, err := localpg.Start(ctx, localpg.Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	if err := second.EnsureDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	second.Stop()
	c, err := pgx.Connect(ctx, first.URL("app"))
	if err != nil {
		t.Fatalf("the first server stopped with the second: %v", err)
	}
	c.Close(ctx)
	first.Stop()
	if _, err := pgx.Connect(ctx, first.URL("postgres")); err == nil {
		t.Fatal("server still answers after Stop")
	}
}
