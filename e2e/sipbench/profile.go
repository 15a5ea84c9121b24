package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// profileStep takes a CPU profile of the call manager over one step and
// samples what its database sessions wait on every 50 ms. The returned
// function waits for both and prints the waits.
func (b *bench) profileStep(pool *pgxpool.Pool, pprofAddr, name string, d time.Duration) func() {
	if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
		fmt.Printf("  profile: %v\n", err)
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(d.Seconds())))
		if err != nil {
			fmt.Printf("  profile: %v\n", err)
			return
		}
		defer res.Body.Close()
		f, err := os.Create(filepath.Join(b.o.profile, name+".pprof"))
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, res.Body)
	}()
	// Transactions and statements per call, from the database's counters.
	_, _ = pool.Exec(context.Background(), `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	_, _ = pool.Exec(context.Background(), `SELECT pg_stat_statements_reset()`)
	var commits0 int64
	_ = pool.QueryRow(context.Background(), `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&commits0)
	waits := map[string]int{}
	samples := 0
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := pool.Query(ctx, `SELECT state || ':' || coalesce(wait_event_type, 'CPU') || ':' || coalesce(wait_event, '-') ||
				CASE WHEN wait_event_type = 'Lock' THEN ' (' || left(regexp_replace(query, '\s+', ' ', 'g'), 60) || ')' ELSE '' END
				FROM pg_stat_activity WHERE backend_type = 'client backend'
				AND pid <> pg_backend_pid() AND state <> 'idle'`)
			if err != nil {
				continue
			}
			samples++
			for rows.Next() {
				var w string
				if rows.Scan(&w) == nil {
					waits[w]++
				}
			}
			rows.Close()
		}
	}()
	return func() {
		wg.Wait()
		var commits int64
		_ = pool.QueryRow(context.Background(), `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&commits)
		fmt.Printf("  %s: %d transactions committed; statements by total time:\n", name, commits-commits0)
		rows, err := pool.Query(context.Background(), `SELECT calls, total_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 70)
			FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			ORDER BY total_exec_time DESC LIMIT 12`)
		if err == nil {
			for rows.Next() {
				var calls int64
				var total float64
				var q string
				if rows.Scan(&calls, &total, &q) == nil {
					fmt.Printf("    %7d x %7.3f ms = %8.1f ms  %s\n", calls, total/float64(max(calls, 1)), total, q)
				}
			}
			rows.Close()
		}
		keys := make([]string, 0, len(waits))
		for k := range waits {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return waits[b] - waits[a] })
		fmt.Printf("  %s: busy database sessions per sample (%d samples):", name, samples)
		for _, k := range keys {
			fmt.Printf(" %s=%.2f", k, float64(waits[k])/float64(max(samples, 1)))
		}
		fmt.Println()
	}
}
