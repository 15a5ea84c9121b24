// Command bench is the load driver behind `make bench`: it starts its own
// Postgres (synchronous_commit on) and call manager processes, drives them
// with simulated node agents speaking the real agent API over HTTPS with
// the real CA pin, and prints one line per figure with its target.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/nodes/agentproto"
)

type options struct {
	only string
	skip string
	keep bool

	agents            int
	calls             int
	portalNodes       int
	lpRate            int
	lpLowRate         int
	placeDuration     time.Duration
	placeRounds       int
	placeWorkers      int
	placeBatch        int
	placeBatchWorkers int
	hbWindow          time.Duration
	portalReqs        int

	foSmall int
	foRecv  int

	ffClusters int
	ffNodes    int
	ffDuration time.Duration
	ffInterval time.Duration
	ffTimeout  time.Duration
	ffJitter   time.Duration

	profileDir   string
	waits        bool
	statements   bool
	fullSets     bool
	ackRequests  bool
	longPoll     bool
	hbAcks       bool
	requestBeats bool
	ackHold      time.Duration
	explain      time.Duration
}

var opt options

func main() {
	if os.Getenv(childEnv) == "1" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "callmanager:", err)
			os.Exit(1)
		}
		return
	}
	flag.StringVar(&opt.only, "only", "", "comma-separated scenes to run: main, failover, falsefailover (default all)")
	flag.StringVar(&opt.skip, "skip", "", "comma-separated phases of the main scene to leave out: portal, heartbeat (with memory); the long-poll and placement phases always run")
	flag.BoolVar(&opt.keep, "keep", false, "keep the work directory (Postgres, logs, profiles)")
	flag.IntVar(&opt.agents, "agents", 1000, "agents for the heartbeat and memory figures")
	flag.IntVar(&opt.calls, "calls", 10000, "active calls for the portal, memory and failover figures")
	flag.IntVar(&opt.portalNodes, "portal-nodes", 500, "nodes (and agents) for the long-poll and portal figures")
	flag.IntVar(&opt.lpRate, "lp-rate", 1000, "assignments per second for the long-poll figure")
	flag.IntVar(&opt.lpLowRate, "lp-low-rate", 250, "a second, lower long-poll rate measured first for 4 s (0: skip)")
	flag.DurationVar(&opt.placeDuration, "placement-duration", 10*time.Second, "placement throughput phase length")
	flag.IntVar(&opt.placeRounds, "placement-rounds", 2, "rounds of the batch placement figure, each followed by the River peer's (the ratio is of their sums)")
	flag.IntVar(&opt.placeWorkers, "placement-workers", 64, "concurrent POST /api/v1/work clients for the single-item comparison")
	flag.IntVar(&opt.placeBatch, "placement-batch", 100, "work items per POST /api/v1/work request for the placement figure")
	flag.IntVar(&opt.placeBatchWorkers, "placement-batch-workers", 8, "concurrent batch POST /api/v1/work clients for the placement figure")
	flag.DurationVar(&opt.hbWindow, "hb-window", 20*time.Second, "heartbeat CPU measurement window")
	flag.IntVar(&opt.portalReqs, "portal-requests", 200, "requests per portal measurement")
	flag.IntVar(&opt.foSmall, "failover-nodes", 30, "extra small media nodes killed one by one for the detection p99")
	flag.IntVar(&opt.foRecv, "failover-receivers", 20, "media nodes that take the failed node's calls")
	flag.IntVar(&opt.ffClusters, "ff-clusters", 10, "independent 100-node clusters run side by side for the false-failover run")
	flag.IntVar(&opt.ffNodes, "ff-nodes", 100, "nodes per false-failover cluster")
	flag.DurationVar(&opt.ffDuration, "ff-duration", 190*time.Second, "false-failover run length")
	flag.DurationVar(&opt.ffInterval, "ff-interval", 500*time.Millisecond, "probe interval during the false-failover run (1s in production)")
	flag.DurationVar(&opt.ffTimeout, "ff-timeout", 450*time.Millisecond, "probe timeout during the false-failover run (800ms in production)")
	flag.DurationVar(&opt.ffJitter, "ff-jitter", 200*time.Millisecond, "injected delay on probe answers, uniform in [0, jitter]")
	flag.StringVar(&opt.profileDir, "profile-dir", "", "save a CPU profile of the call manager for each phase here")
	flag.BoolVar(&opt.fullSets, "full-sets", false, "with -long-poll: agents take the whole desired set on every delivery (as before delta deliveries), to compare")
	flag.BoolVar(&opt.ackRequests, "ack-requests", false, "with -long-poll: agents ack in requests of their own (as before acks rode the next poll), to compare")
	flag.BoolVar(&opt.longPoll, "long-poll", false, "agents long-poll and ack on the next poll (as before streamed deliveries), to compare")
	flag.BoolVar(&opt.hbAcks, "heartbeat-acks", false, "agents stream deliveries on a GET and ack only on their heartbeats (as before acks on the stream after a quiet spell), to compare")
	flag.BoolVar(&opt.requestBeats, "request-beats", false, "agents send their heartbeats in requests of their own, not on their POST streams' bodies (as before beats on the stream), to compare")
	flag.DurationVar(&opt.ackHold, "ack-hold", agentproto.AckHold, "the longest a busy agent's acks wait for its next heartbeat before going on the stream (0: always wait for it, as before the hold), to compare")
	flag.BoolVar(&opt.statements, "statements", false, "report the statements that took the most Postgres time in each load phase (pg_stat_statements)")
	flag.DurationVar(&opt.explain, "explain", 0, "log the plans of statements slower than this, nested ones included, to the Postgres log (auto_explain; use with -keep)")
	flag.BoolVar(&opt.waits, "waits", false, "sample what Postgres backends wait on during the load phases")
	flag.Parse()
	// The load driver holds thousands of TLS connections and simulated
	// agents: collect its garbage less often, so the machine's cores go
	// to the call manager and Postgres under test (its figures are not
	// the driver's; the call manager keeps its own GC settings).
	debug.SetGCPercent(400)
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func want(scene string) bool {
	if opt.only == "" {
		return true
	}
	for _, s := range strings.Split(opt.only, ",") {
		if strings.TrimSpace(s) == scene {
			return true
		}
	}
	return false
}

func wantPhase(phase string) bool {
	for _, s := range strings.Split(opt.skip, ",") {
		if strings.TrimSpace(s) == phase {
			return false
		}
	}
	return true
}

var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	began := time.Now()
	// The work dir must be reachable by the postgres user when we are root.
	root, err := os.MkdirTemp("", "callplane-bench-")
	if err != nil {
		return err
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	if !opt.keep {
		defer os.RemoveAll(root)
	} else {
		fmt.Println("work directory:", root)
	}
	if opt.profileDir != "" {
		_ = os.MkdirAll(opt.profileDir, 0o755)
	}
	machine()
	pg, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(root, "postgres"), Fast: false, Log: quiet,
		Settings: pgSettings()})
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	defer pg.Stop()
	fmt.Printf("postgres: synchronous_commit=on, fsync=on, under %s\n\n", root)
	if want("main") {
		if err := sceneMain(ctx, pg, root); err != nil {
			return fmt.Errorf("main scene: %w", err)
		}
	}
	if want("failover") {
		if err := sceneFailover(ctx, pg, root); err != nil {
			return fmt.Errorf("failover scene: %w", err)
		}
	}
	if want("falsefailover") {
		if err := sceneFalseFailover(ctx, pg, root); err != nil {
			return fmt.Errorf("false-failover scene: %w", err)
		}
	}
	fmt.Printf("\nsummary (%s):\n", time.Since(began).Round(time.Second))
	for _, f := range figures {
		fmt.Println(f.line())
	}
	return nil
}

func machine() {
	out := func(name string, args ...string) string {
		b, _ := exec.Command(name, args...).CombinedOutput()
		return strings.TrimSpace(string(b))
	}
	load := out("cat", "/proc/loadavg")
	fmt.Printf("machine: %d cores (nproc %s), Go %s, %s\n", runtime.NumCPU(), out("nproc"), runtime.Version(), out("sh", "-c", "postgres --version 2>/dev/null || ls /usr/lib/postgresql"))
	fmt.Printf("memory: %s\n", strings.Join(strings.Fields(strings.Split(out("free", "-h"), "\n")[1]), " "))
	fmt.Printf("load average at start: %s\n", load)
}

func logf(format string, args ...any) {
	fmt.Printf("  . "+format+"\n", args...)
}

// pgSettings are the bench's Postgres settings.
func pgSettings() map[string]string {
	s := map[string]string{"max_connections": "800"}
	var preload []string
	if opt.statements {
		preload = append(preload, "pg_stat_statements")
		s["pg_stat_statements.track"] = "all" // statements inside SQL functions too
	}
	if opt.explain > 0 {
		preload = append(preload, "auto_explain")
		s["auto_explain.log_min_duration"] = fmt.Sprintf("%dms", opt.explain.Milliseconds())
		s["auto_explain.log_analyze"] = "on"
		s["auto_explain.log_nested_statements"] = "on"
		s["auto_explain.log_triggers"] = "on"
		s["log_lock_waits"] = "on"
		s["deadlock_timeout"] = "10ms"
	}
	if len(preload) > 0 {
		s["shared_preload_libraries"] = strings.Join(preload, ",")
	}
	return s
}
