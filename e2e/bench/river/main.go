// Command river is the peer `make bench` measures Callplane's placement
// against: River (riverqueue/river, riverpgxv5) on the same Postgres, in a
// module of its own so River stays out of the product's go.mod.
//
//	river -database-url URL -mode migrate
//	river -database-url URL -mode work -jobs N     (100 workers; exits when N jobs completed)
//	river -database-url URL -mode insert -jobs N   (8 clients, batches of 100)
//
// The work side uses River's own benchmark tuning (FetchCooldown 2 ms,
// FetchPollInterval 20 ms). The rate, created to completed, is read from
// river_job by the caller.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// NoopArgs is the benchmark job: it does nothing, like River's own bench.
type NoopArgs struct {
	N int `json:"n"`
}

// Kind names the job.
func (NoopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[NoopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[NoopArgs]) error { return nil }

func main() {
	url := flag.String("database-url", "", "Postgres URL")
	mode := flag.String("mode", "", "migrate, work or insert")
	jobs := flag.Int("jobs", 100000, "jobs to insert or to wait for")
	clients := flag.Int("clients", 8, "concurrent inserting clients")
	batch := flag.Int("batch", 100, "jobs per insert")
	workers := flag.Int("workers", 100, "workers")
	flag.Parse()
	if err := run(*url, *mode, *jobs, *clients, *batch, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "river:", err)
		os.Exit(1)
	}
}

func run(url, mode string, jobs, clients, batch, workers int) error {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return err
	}
	cfg.MaxConns = int32(max(clients, 10) + 4)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	switch mode {
	case "migrate":
		m, err := rivermigrate.New(driver, nil)
		if err != nil {
			return err
		}
		_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
		return err
	case "insert":
		client, err := river.NewClient(driver, &river.Config{})
		if err != nil {
			return err
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for range clients {
			wg.Go(func() {
				for {
					from := int(next.Add(int64(batch))) - batch
					if from >= jobs {
						return
					}
					params := make([]river.InsertManyParams, 0, batch)
					for i := from; i < min(from+batch, jobs); i++ {
						params = append(params, river.InsertManyParams{Args: NoopArgs{N: i}})
					}
					if _, err := client.InsertManyFast(ctx, params); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	case "work":
		w := river.NewWorkers()
		river.AddWorker(w, &noopWorker{})
		client, err := river.NewClient(driver, &river.Config{
			Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
			Workers:           w,
			FetchCooldown:     2 * time.Millisecond,
			FetchPollInterval: 20 * time.Millisecond,
		})
		if err != nil {
			return err
		}
		// Room for every completion: a subscription drops the events that
		// overflow its buffer (1,000 by default), and a dropped one would
		// keep this process waiting for a job that has long completed.
		done, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: jobs, Kinds: []river.EventKind{river.EventKindJobCompleted}})
		defer cancel()
		if err := client.Start(ctx); err != nil {
			return err
		}
		fmt.Println("ready")
		deadline := time.After(10 * time.Minute)
		for n := 0; n < jobs; {
			select {
			case <-done:
				n++
			case <-deadline:
				return fmt.Errorf("only %d of %d jobs completed in 10 minutes", n, jobs)
			}
		}
		stop, cancelStop := context.WithTimeout(ctx, 30*time.Second)
		defer cancelStop()
		return client.Stop(stop)
	}
	return fmt.Errorf("unknown mode %q", mode)
}
