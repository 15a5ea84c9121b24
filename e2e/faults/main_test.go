package faults

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/e2e/faultproxy"
	"github.com/callplane/callplane/e2e/harness"
	"github.com/callplane/callplane/nodes/probe"
)

// Shared by every scenario: built and started once in TestMain; each
// scenario gets its own database, call managers, agents and SMTP sink.
var (
	binDir   string
	testBin  string // this test binary, re-run as a node's media service
	tmpRoot  string // 0755: the postgres user enters it
	pg       *localpg.Server
	proxies  *faultproxy.Server
	setupErr error
)

// serviceEnv makes this test binary a node's SIP service (the media server
// a node agent runs beside) listening on the address it holds.
const serviceEnv = "CALLPLANE_FAULTS_SIP_SERVICE"

func TestMain(m *testing.M) {
	if addr := os.Getenv(serviceEnv); addr != "" {
		os.Exit(serveSIP(addr))
	}
	os.Exit(runMain(m))
}

// serveSIP answers SIP OPTIONS on addr until SIGTERM or SIGKILL: the
// service whose health the checker probes.
func serveSIP(addr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ep, err := probe.NewEndpoint(ctx, "media", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sip service:", err)
		return 1
	}
	fmt.Println("sip service listening on", ep.Address())
	<-ctx.Done()
	_ = ep.Close()
	return 0
}

func runMain(m *testing.M) int {
	var err error
	tmpRoot, err = os.MkdirTemp("", "cpfaults")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(tmpRoot)
	setupErr = setup()
	code := m.Run()
	printTable(os.Stdout)
	if pg != nil {
		pg.Stop()
	}
	if proxies != nil {
		proxies.Close()
	}
	return code
}

func setup() error {
	if err := os.Chmod(tmpRoot, 0o755); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	testBin = exe
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	binDir = filepath.Join(tmpRoot, "bin")
	start := time.Now()
	if err := harness.BuildBinaries(root, binDir); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "faults: built callmanager and nodeagent in %v\n", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err = localpg.Start(ctx, localpg.Options{Dir: filepath.Join(tmpRoot, "pg"), Fast: true})
	if err != nil {
		return fmt.Errorf("start the test Postgres: %w", err)
	}
	proxies = faultproxy.New()
	return nil
}

func requireSetup(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("fault suite setup: %v", setupErr)
	}
}
