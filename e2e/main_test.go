package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/e2e/harness"
)

// The binaries and the Postgres server are shared by every test of the
// package: built and started once in TestMain, each test gets its own
// database (see newCluster).
var (
	binDir   string // holds callmanager and nodeagent
	pg       *localpg.Server
	pgRoot   string
	setupErr error // why the shared setup failed; every test reports it
)

// chromiumPath is Debian's Chromium; the tests drive no other browser.
const chromiumPath = "/usr/bin/chromium"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "cpe2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	binDir = filepath.Join(tmp, "bin")
	setupErr = buildBinaries(binDir)
	if setupErr == nil {
		setupErr = startPostgres()
	}
	code := m.Run()
	if pg != nil {
		pg.Stop()
	}
	if pgRoot != "" {
		os.RemoveAll(pgRoot)
	}
	return code
}

// buildBinaries builds the real programs once, as a user would.
func buildBinaries(dir string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := harness.BuildBinaries(root, dir); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "e2e: built callmanager and nodeagent in %v (%s)\n", time.Since(start).Round(time.Millisecond), runtime.Version())
	return nil
}

// startPostgres starts one throwaway local Postgres for all tests. As
// root it runs as the postgres user, which must be able to enter the
// directory, hence the 0755 parent.
func startPostgres() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	pgRoot, err = os.MkdirTemp("", "cpe2edb")
	if err != nil {
		return err
	}
	if err := os.Chmod(pgRoot, 0o755); err != nil {
		return err
	}
	pg, err = localpg.Start(ctx, localpg.Options{Dir: filepath.Join(pgRoot, "pg"), Fast: true})
	if err != nil {
		return fmt.Errorf("start the test Postgres: %w", err)
	}
	return nil
}

// requireSetup fails the test when the shared setup failed.
func requireSetup(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("e2e setup: %v", setupErr)
	}
}

// requireChromium fails (never skips) when Debian's Chromium is missing.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s not found: install it: apt-get install -y chromium", chromiumPath)
	}
}
