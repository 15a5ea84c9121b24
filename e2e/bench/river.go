package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/localpg"
)

// riverDir is the River peer's own module (kept out of the product's
// go.mod), relative to the repository root `make bench` runs from.
const riverDir = "e2e/bench/river"

// runRiverPeer measures River v0.51 (riverpgxv5) on the same Postgres as
// the placement figure: jobs inserted in batches of 100 by 8 clients and
// worked by 100 workers in a separate process with River's own benchmark
// tuning, created to completed. It returns jobs per second.
func runRiverPeer(ctx context.Context, pg *localpg.Server, dir, database string, jobs int) (float64, error) {
	if err := pg.EnsureDatabase(ctx, database); err != nil {
		return 0, err
	}
	url := pg.URL(database)
	bin, err := filepath.Abs(filepath.Join(dir, "riverpeer"))
	if err != nil {
		return 0, err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = riverDir
	build.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("build the River peer: %v: %s", err, out)
	}
	peer := func(mode string) *exec.Cmd {
		return exec.CommandContext(ctx, bin, "-database-url", url, "-mode", mode, "-jobs", strconv.Itoa(jobs),
			"-clients", "8", "-batch", "100", "-workers", "100")
	}
	if out, err := peer("migrate").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("migrate River: %v: %s", err, out)
	}
	work := peer("work")
	stdout, err := work.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr strings.Builder
	work.Stderr = &stderr
	if err := work.Start(); err != nil {
		return 0, err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Minute):
		_ = work.Process.Kill()
		return 0, fmt.Errorf("the River workers were not ready within 2 minutes: %s", stderr.String())
	}
	if out, err := peer("insert").CombinedOutput(); err != nil {
		_ = work.Process.Kill()
		return 0, fmt.Errorf("insert River jobs: %v: %s", err, out)
	}
	if err := work.Wait(); err != nil {
		return 0, fmt.Errorf("the River workers: %v: %s", err, stderr.String())
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int64
	var span float64
	err = conn.QueryRow(ctx, `SELECT count(*), coalesce(extract(epoch FROM max(finalized_at) - min(created_at)), 0)::float8
		FROM river_job WHERE state = 'completed'`).Scan(&n, &span)
	if err != nil {
		return 0, err
	}
	if n < int64(jobs) || span <= 0 {
		return 0, fmt.Errorf("only %d of %d River jobs completed", n, jobs)
	}
	return float64(n) / span, nil
}
