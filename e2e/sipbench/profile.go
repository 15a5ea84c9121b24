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
