package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

var actor = nodes.Actor{Name: "bench", Addr: "local"}

var agentIndex atomic.Int64

// scene is one call manager process on its own database, with its agents.
type scene struct {
	name   string
	dir    string
	dbURL  string
	pool   *pgxpool.Pool
	svc    *nodes.Service
	cm     *child
	rec    *recorder
	agents map[string]*simAgent
	mu     sync.Mutex
}

func newScene(ctx context.Context, pg *localpg.Server, root, name string, settings map[string]string) (*scene, error) {
	if err := pg.EnsureDatabase(ctx, name); err != nil {
		return nil, err
	}
	sc := &scene{name: name, dir: filepath.Join(root, name), dbURL: pg.URL(name), rec: newRecorder(), agents: map[string]*simAgent{}}
	var err error
	if sc.pool, err = db.Open(ctx, sc.dbURL, 24); err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, sc.pool, quiet); err != nil {
		return nil, err
	}
	sc.svc = nodes.NewService(sc.pool, quiet)
	if settings != nil {
		if err := saveSettings(ctx, sc.pool, settings); err != nil {
			return nil, err
		}
	}
	if sc.cm, err = startChild(ctx, sc.dir, sc.dbURL, name); err != nil {
		return nil, err
	}
	logf("call manager %s (pid %d, pprof %s, log %s)", sc.cm.URL, sc.cm.pid(), sc.cm.Pprof, sc.cm.logPath)
	hc, _ := newClient(sc.cm.Pin, -1)
	for i := 0; i < 200; i++ {
		if _, err = doJSON(ctx, hc, http.MethodGet, sc.cm.URL+"/readyz", "", nil, nil); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sc, err
}

// saveSettings stores health settings as the portal would.
func saveSettings(ctx context.Context, pool *pgxpool.Pool, kv map[string]string) error {
	store := settings.NewStore(pool, settings.Defaults{}, "", quiet)
	st, err := store.Load(ctx)
	if err != nil {
		return err
	}
	v := st.Values()
	for k, x := range kv {
		v[k] = x
	}
	_, err = store.Save(ctx, actor, v)
	return err
}

func (sc *scene) close() {
	sc.mu.Lock()
	agents := sc.agents
	sc.agents = map[string]*simAgent{}
	sc.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(a.kill)
	}
	wg.Wait()
	if sc.cm != nil {
		sc.cm.stop()
	}
	sc.pool.Close()
}

// parallel runs fn for 0..n-1 on w workers and returns the first error.
func parallel(n, w int, fn func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return e.(error)
	}
	return nil
}

// loopbackAddrs gives node i its own loopback address (127.1.x.y) on the
// port of an endpoint listening on every address, so many nodes share one
// endpoint without sharing a service address, which Callplane refuses.
func loopbackAddrs(endpoint string) func(i int) string {
	_, port, _ := net.SplitHostPort(endpoint)
	return func(i int) string { return fmt.Sprintf("127.1.%d.%d:%s", i/250, i%250+1, port) }
}

// addNodes registers n media nodes named prefix-0000…; addr gives each
// node's SIP probe address.
func (sc *scene) addNodes(ctx context.Context, prefix string, n, capacity int, addr func(i int) string) ([]string, error) {
	names := make([]string, n)
	err := parallel(n, 8, func(i int) error {
		names[i] = fmt.Sprintf("%s-%04d", prefix, i)
		_, err := sc.svc.AddNode(ctx, actor, nodes.NodeInput{Name: names[i], Kind: nodes.KindMedia, Address: addr(i),
			Capacity: strconv.Itoa(capacity), Weight: "100", Region: "bench"})
		return err
	})
	return names, err
}

// enroll creates a join token per node and enrols an agent with it over
// the agent API, then starts the agent's loops.
func (sc *scene) enroll(ctx context.Context, names []string, ack bool) error {
	return parallel(len(names), 16, func(i int) error {
		jt, err := sc.svc.CreateJoinToken(ctx, actor, names[i], 0)
		if err != nil {
			return err
		}
		a, err := enrollAgent(ctx, sc.cm.URL, sc.cm.Pin, int(agentIndex.Add(1)), jt.Token, sc.rec, ack)
		if err != nil {
			return fmt.Errorf("node %s: %w", names[i], err)
		}
		a.start(context.WithoutCancel(ctx))
		sc.mu.Lock()
		sc.agents[names[i]] = a
		sc.mu.Unlock()
		return nil
	})
}

func (sc *scene) agent(name string) *simAgent {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.agents[name]
}

// waitHealth waits until every named node has the health.
func (sc *scene) waitHealth(ctx context.Context, names []string, h string, limit time.Duration) error {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	deadline := time.Now().Add(limit)
	for {
		list, err := sc.svc.ListNodes(ctx, nodes.NodeFilter{})
		if err != nil {
			return err
		}
		missing := 0
		for _, n := range list {
			if want[n.Name] && n.Health != h {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes not %s after %s (call manager log: %s)", missing, len(names), h, limit, sc.cm.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dbWrites reads Postgres's WAL counters: records written and WAL syncs
// (durable commits; read-only transactions do not sync).
func dbWrites(ctx context.Context, pool *pgxpool.Pool) (records, syncs int64) {
	// Benchmark-only statistics query, not application SQL.
	_ = pool.QueryRow(ctx, "SELECT wal_records, wal_sync FROM pg_stat_wal").Scan(&records, &syncs)
	return
}

// profile captures CPU profiles of the call manager and of the load driver for d in the
// background when -profile-dir is set, and the driver's heap at the end.
func (sc *scene) profile(ctx context.Context, phase string, d time.Duration) func() {
	if opt.profileDir == "" {
		return func() {}
	}
	// The load driver's own profile (the simulated agents and clients)
	// beside the call manager's, to tell what each side costs.
	var self *os.File
	if f, err := os.Create(filepath.Join(opt.profileDir, phase+"-driver.pprof")); err == nil {
		if pprof.StartCPUProfile(f) == nil {
			self = f
		} else {
			f.Close()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", sc.cm.Pprof, int(d.Seconds()))
		res, err := http.Get(url)
		if err != nil {
			return
		}
		defer res.Body.Close()
		f, err := os.Create(filepath.Join(opt.profileDir, phase+".pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, res.Body)
	}()
	return func() {
		<-done
		if self != nil {
			pprof.StopCPUProfile()
			self.Close()
		}
		// And what the driver holds at the phase's end.
		if f, err := os.Create(filepath.Join(opt.profileDir, phase+"-driver-heap.pprof")); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
	}
}

// sampleWaits counts what Postgres backends wait on while a phase runs
// (-waits), to tell lock queues from disk and CPU.
func (sc *scene) sampleWaits(ctx context.Context, phase string) func() {
	stopStatements := sc.topStatements(ctx, phase)
	if !opt.waits {
		return stopStatements
	}
	counts := map[string]int{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			// Benchmark-only diagnostics query, not application SQL.
			// A lock wait names its statement (sqlc's name, else its start).
			rows, err := sc.pool.Query(ctx, `SELECT coalesce(wait_event_type,'CPU')||':'||coalesce(wait_event,'running')
					|| CASE WHEN wait_event_type = 'Lock' THEN '@' || coalesce(substring(query from '-- name: (\w+)'), left(query, 30)) ELSE '' END AS w, count(*)
				FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1`)
			if err != nil {
				continue
			}
			for rows.Next() {
				var w string
				var n int
				if rows.Scan(&w, &n) == nil {
					counts[w] += n
				}
			}
			rows.Close()
		}
	}()
	return func() {
		close(stop)
		<-done
		stopStatements()
		type kv struct {
			k string
			v int
		}
		var all []kv
		for k, v := range counts {
			all = append(all, kv{k, v})
		}
		slices.SortFunc(all, func(a, b kv) int { return b.v - a.v })
		var parts []string
		for i, x := range all {
			if i == 12 {
				break
			}
			parts = append(parts, fmt.Sprintf("%s=%d", x.k, x.v))
		}
		logf("%s: postgres backends waiting on (samples): %s", phase, strings.Join(parts, " "))
	}
}

// topStatements (-statements) resets pg_stat_statements when a phase
// starts and, when it ends, prints the statements that took the most
// Postgres time in it: where the database's work per item goes.
func (sc *scene) topStatements(ctx context.Context, phase string) func() {
	if !opt.statements {
		return func() {}
	}
	// Benchmark-only diagnostics, not application SQL.
	if _, err := sc.pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		logf("%s: pg_stat_statements: %v", phase, err)
		return func() {}
	}
	_, _ = sc.pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	updates := func() map[string][2]int64 {
		out := map[string][2]int64{}
		rows, err := sc.pool.Query(ctx, `SELECT relname::text, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
			WHERE relname IN ('nodes', 'work')`)
		if err != nil {
			return out
		}
		defer rows.Close()
		for rows.Next() {
			var t string
			var upd, hot int64
			if rows.Scan(&t, &upd, &hot) == nil {
				out[t] = [2]int64{upd, hot}
			}
		}
		return out
	}
	before := updates()
	return func() {
		after := updates()
		for _, t := range []string{"nodes", "work"} {
			upd, hot := after[t][0]-before[t][0], after[t][1]-before[t][1]
			logf("%s: %s rows updated %d, of which HOT %d (%.0f%%)", phase, t, upd, hot, 100*float64(hot)/float64(max(upd, 1)))
		}
		rows, err := sc.pool.Query(ctx, `SELECT calls, rows, total_exec_time, regexp_replace(left(query, 110), '\s+', ' ', 'g')
			FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12`)
		if err != nil {
			logf("%s: pg_stat_statements: %v", phase, err)
			return
		}
		defer rows.Close()
		logf("%s: statements by Postgres time (calls, rows, total ms, query):", phase)
		for rows.Next() {
			var calls, n int64
			var total float64
			var q string
			if rows.Scan(&calls, &n, &total, &q) == nil {
				logf("    %7d %8d %9.0f  %s", calls, n, total, q)
			}
		}
	}
}
