package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/callplane/callplane/db/dbtest"
)

// A leader whose renewal came late (the process was stopped, SIGSTOP-like,
// past two thirds of the lease) stops its leader tasks; when the renewal
// then succeeds with the same epoch, the tasks must start again. Before
// the fix they stayed stopped for good: a silent leader.
func TestLateRenewalWithSameEpochRestartsLeaderTasks(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	l := NewLeader(pool, "cm-a", 3*time.Second, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.tick(ctx)
	epoch, ok := l.Epoch()
	if !ok {
		t.Fatal("did not acquire the lease")
	}
	var mu sync.Mutex
	var starts []int64
	stopped := make(chan struct{}, 10)
	go l.WhileLeading(ctx, func(ctx context.Context, e int64) {
		mu.Lock()
		starts = append(starts, e)
		mu.Unlock()
		<-ctx.Done()
		stopped <- struct{}{}
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(starts) }
	waitUntil(t, "the leader task to start", func() bool { return count() == 1 })

	// The process "pauses": its last renewal is now older than 2/3 of the
	// lease, though the lease row in Postgres is still valid.
	l.mu.Lock()
	l.renewed = time.Now().Add(-l.ttl * 3 / 4)
	l.mu.Unlock()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the leader task kept running on a lease it could not trust")
	}
	if _, ok := l.Epoch(); ok {
		t.Fatal("Epoch() trusted a late lease")
	}
	// It resumes and renews in time: same epoch.
	l.tick(ctx)
	if e, ok := l.Epoch(); !ok || e != epoch {
		t.Fatalf("after the late renewal: epoch %d, leading %v; want %d, true", e, ok, epoch)
	}
	waitUntil(t, "the leader task to start again with the same epoch", func() bool { return count() == 2 })
	mu.Lock()
	defer mu.Unlock()
	if starts[1] != epoch {
		t.Fatalf("restarted with epoch %d; want %d", starts[1], epoch)
	}
}

// StepDown releases the lease at once, so the next acquire (here by the
// same instance) gets a new epoch and restarts the leader tasks.
func TestStepDownReleasesAndRestarts(t *testing.T) {
	t.Parallel()
	pool := dbtest.New(t)
	l := NewLeader(pool, "cm-a", 3*time.Second, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.tick(ctx)
	e1, _ := l.Epoch()
	l.StepDown(e1, "test")
	if _, ok := l.Epoch(); ok {
		t.Fatal("still leading after stepping down")
	}
	if cur := l.Current(ctx); cur != "" {
		t.Fatalf("lease still held by %q after stepping down", cur)
	}
	l.tick(ctx)
	if e2, ok := l.Epoch(); !ok || e2 <= e1 {
		t.Fatalf("after step-down and acquire: epoch %d (leading %v); want > %d", e2, ok, e1)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
