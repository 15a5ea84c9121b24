// Command sipbench is the SIP scene of `make bench`: sipp callers at
// stepped rates through Callplane's SIP front door (a real call manager
// process on its own Postgres, synchronous_commit on, every call a
// durable row) to two sipp media nodes, and the same load through
// Kamailio's dispatcher (e2e/sipbench/kamailio.cfg) on the same machine.
// For each proxy it prints the highest rate with no failed call, the
// setup time it adds over calling a media node directly (p50/p99), the
// proxy's CPU seconds per 1,000 calls, and whether it held the
// concurrent-call target.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/callplane/callplane/db/localpg"
)

type options struct {
	rates      []int
	step       time.Duration
	concurrent int
	concRate   int
	hold       time.Duration
	only       string
	keep       bool
	profile    string
}

func main() {
	var o options
	rates := flag.String("rates", "100,200,300,400,600,800,1000", "call rates (calls/s) stepped through, in order")
	flag.DurationVar(&o.step, "step", 10*time.Second, "length of each rate step")
	flag.IntVar(&o.concurrent, "concurrent", 10000, "calls held at once for the concurrency figure (0: skip)")
	flag.IntVar(&o.concRate, "concurrent-rate", 200, "call rate while building up the concurrent calls")
	flag.DurationVar(&o.hold, "hold", 60*time.Second, "how long each of the concurrent calls lasts")
	flag.StringVar(&o.only, "only", "", "run one proxy only: callplane or kamailio")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, sipp traces)")
	flag.StringVar(&o.profile, "profile", "", "write a CPU profile of the call manager per step, and print Postgres wait events, into this directory")
	flag.Parse()
	for _, r := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fmt.Fprintln(os.Stderr, "sipbench: -rates must be positive whole numbers")
			os.Exit(2)
		}
		o.rates = append(o.rates, n)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "sipbench:", err)
		os.Exit(1)
	}
}

// result is one proxy's figures.
type result struct {
	name       string
	steps      []step
	cleanRate  int  // highest rate with no failed call
	base       step // calling a media node directly at 100 calls/s, just before
	concurrent conc
}

func run(ctx context.Context, o options) error {
	for _, bin := range []string{"sipp", "kamailio"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed (Debian packages sip-tester and kamailio)", bin)
		}
	}
	dir, err := os.MkdirTemp("", "sipbench")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	b := &bench{o: o, dir: dir, repo: repo}
	defer b.stopAll()
	fmt.Printf("SIP scene: sipp callers -> proxy -> 2 sipp media nodes, UDP on loopback, %d CPUs shared with whatever else runs\n", cpus())

	// Two media nodes for the proxies, a third for the direct baseline.
	b.media = []string{b.startMedia("media-1"), b.startMedia("media-2")}
	b.direct = b.startMedia("media-direct")

	var results []result
	if o.only == "" || o.only == "callplane" {
		pgOpts := localpg.Options{Dir: filepath.Join(dir, "pg"), Log: slog.New(slog.DiscardHandler)}
		if o.profile != "" {
			// Statement counts and times for the profile's figures.
			pgOpts.Settings = map[string]string{"shared_preload_libraries": "pg_stat_statements,auto_explain",
				"auto_explain.log_min_duration": "20ms", "auto_explain.log_analyze": "on", "auto_explain.log_nested_statements": "on"}
		}
		pg, err := localpg.Start(ctx, pgOpts)
		if err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		b.stops = append(b.stops, func() { pg.Stop() })
		if err := pg.EnsureDatabase(ctx, "callplane"); err != nil {
			return err
		}
		p, err := b.startCallplane(ctx, pg.URL("callplane"))
		if err != nil {
			return fmt.Errorf("callplane: %w", err)
		}
		results = append(results, b.measure(p))
		p.stop()
	}
	if o.only == "" || o.only == "kamailio" {
		p, err := b.startKamailio()
		if err != nil {
			return fmt.Errorf("kamailio: %w", err)
		}
		results = append(results, b.measure(p))
		p.stop()
	}
	report(o, results)
	return nil
}

// measure holds the concurrent calls through one proxy, then steps it
// through the rates, stopping after the first step with a failed call.
func (b *bench) measure(p *proxy) result {
	r := result{name: p.name}
	fmt.Printf("%s at %s\n", p.name, p.addr)
	// The baseline is taken next to each proxy's run: the machine's load
	// from other work changes from minute to minute.
	base, err := b.sippStep("direct-before-"+p.name, b.direct, 100)
	if err != nil {
		fmt.Printf("  direct baseline: %v\n", err)
	}
	r.base = base
	fmt.Printf("  direct to a media node at 100 calls/s: setup p50 %.2f ms, p99 %.2f ms (%d calls, %d failed)\n",
		base.p50, base.p99, base.calls, base.failed)
	// Warm up (connections, plans, caches) before measuring.
	if _, err := b.sippCallsFor(p.name+"-warmup", p.addr, 50, 3*time.Second); err != nil {
		fmt.Printf("  warm-up: %v\n", err)
	}
	// The concurrent calls first, while no failed step has left calls behind.
	if b.o.concurrent > 0 {
		r.concurrent = b.holdCalls(p)
		fmt.Printf("  %d concurrent calls: peak %d live, %d failed\n", b.o.concurrent, r.concurrent.peak, r.concurrent.failed)
	}
	for _, rate := range b.o.rates {
		cpu0, db0 := p.cpu(), p.dbCPU()
		proxyDrops0, mediaDrops0 := udpDrops(p.addr), udpDrops(b.media...)
		var profDone func()
		if p.profile != nil {
			profDone = p.profile(fmt.Sprintf("%s-%d", p.name, rate), b.o.step)
		}
		s, err := b.sippStep(p.name, p.addr, rate)
		if profDone != nil {
			profDone()
		}
		if err != nil {
			fmt.Printf("  %5d calls/s: %v\n", rate, err)
			break
		}
		s.cpu, s.dbCPU = p.cpu()-cpu0, p.dbCPU()-db0
		r.steps = append(r.steps, s)
		db := ""
		if p.dbPid != 0 {
			db = fmt.Sprintf(" (its Postgres %.2f)", s.dbCPU/float64(max(s.calls, 1))*1000)
		}
		fmt.Printf("  %5d calls/s: %6d calls, %4d failed, setup p50 %6.2f ms p99 %7.2f ms, %.2f CPU s per 1,000 calls%s, "+
			"%d retransmissions by the caller, UDP drops at the proxy %d and the media nodes %d\n",
			rate, s.calls, s.failed, s.p50, s.p99, s.cpuPer1000(), db, s.retrans, udpDrops(p.addr)-proxyDrops0, udpDrops(b.media...)-mediaDrops0)
		if s.failed > 0 {
			break
		}
		r.cleanRate = rate
	}
	return r
}

func report(o options, results []result) {
	fmt.Println()
	fmt.Println("| proxy | highest clean rate (calls/s) | added setup p50 / p99 at 100 calls/s | CPU s per 1,000 calls at 100 calls/s | at the clean rate | concurrent calls held |")
	fmt.Println("|---|---|---|---|---|---|")
	clean := map[string]int{}
	for _, r := range results {
		clean[r.name] = r.cleanRate
		var at100, atClean step
		for _, s := range r.steps {
			if s.rate == 100 {
				at100 = s
			}
			if s.rate == r.cleanRate {
				atClean = s
			}
		}
		held := "not run"
		if o.concurrent > 0 {
			held = fmt.Sprintf("%d of %d (%d failed)", r.concurrent.peak, o.concurrent, r.concurrent.failed)
		}
		fmt.Printf("| %s | %d | %.2f / %.2f ms | %.2f | %.2f | %s |\n", r.name, r.cleanRate,
			at100.p50-r.base.p50, at100.p99-r.base.p99, at100.cpuPer1000(), atClean.cpuPer1000(), held)
	}
	if k := clean["kamailio"]; k > 0 {
		if c, ok := clean["callplane"]; ok {
			fmt.Printf("\nCallplane's clean rate is %.0f %% of Kamailio's (target >= 90 %%).\n", 100*float64(c)/float64(k))
		}
	}
}
