package auth

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callplane/callplane/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

func newTestService(t *testing.T) *Service {
	t.Helper()
	s := NewService(dbtest.New(t), slog.New(slog.DiscardHandler))
	if _, err := s.AddUser(context.Background(), "test", "local", "owner@example.com", "correct horse battery", RoleOwner); err != nil {
		t.Fatal(err)
	}
	return s
}

// At most the pool's size of argon2id computations run at once, however
// many sign-ins arrive together; a sign-in that cannot get a hasher in
// time is ErrBusy, not an unbounded queue.
func TestHasherBounded(t *testing.T) {
	t.Parallel()
	h := newHasher(2, time.Minute)
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			_ = h.do(context.Background(), func() {
				n := running.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				<-release
				running.Add(-1)
			})
		})
	}
	// Wait until two run; the rest must be waiting.
	deadline := time.Now().Add(30 * time.Second)
	for running.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	busy := newHasher(1, 10*time.Millisecond)
	busy.slots <- struct{}{}
	if err := busy.do(context.Background(), func() {}); !errors.Is(err, ErrBusy) {
		t.Errorf("full pool: err %v, want ErrBusy", err)
	}
	close(release)
	wg.Wait()
	if peak.Load() != 2 {
		t.Errorf("peak concurrent hashes %d, want 2", peak.Load())
	}
}

func TestBudgetRefills(t *testing.T) {
	t.Parallel()
	b := newBudget(3, time.Second)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if ok, _ := b.take("a", now); !ok {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	ok, wait := b.take("a", now)
	if ok || wait != time.Second {
		t.Fatalf("over the burst: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := b.take("b", now); !ok {
		t.Error("another client shares the budget")
	}
	if ok, _ := b.take("a", now.Add(time.Second)); !ok {
		t.Error("not refilled after a second")
	}
}

func TestSlowdownWaits(t *testing.T) {
	t.Parallel()
	sd := slowdown{free: 5, first: 30 * time.Second, maxWait: 15 * time.Minute}
	for n, want := range map[int]time.Duration{0: 0, 4: 0, 5: 30 * time.Second, 6: time.Minute, 9: 8 * time.Minute, 10: 15 * time.Minute, 100: 15 * time.Minute} {
		if got := sd.wait(n); got != want {
			t.Errorf("wait(%d) = %v, want %v", n, got, want)
		}
	}
}

// A client over its budget is refused without a password check: a flood
// of sign-ins from one address costs no argon2id work past the burst.
func TestThrottledSignInsNeverHash(t *testing.T) {
	t.Parallel()
	s := newTestService(t)
	s.budget = newBudget(BudgetBurst, time.Hour) // no refill while the test runs, however slow
	ctx := context.Background()
	before := s.hasher.runs.Load()
	throttled := 0
	for i := range BudgetBurst + 15 {
		_, _, err := s.Login(ctx, "nobody"+string(rune('a'+i))+"@example.com", "wrong password", "192.0.2.7", "test")
		if errors.Is(err, ErrThrottled) {
			throttled++
		}
	}
	if hashed := s.hasher.runs.Load() - before; hashed > BudgetBurst {
		t.Errorf("%d password checks for one client, budget %d", hashed, BudgetBurst)
	}
	if throttled < 15 {
		t.Errorf("%d sign-ins throttled, want at least 15", throttled)
	}
}

// Concurrent guesses cannot overrun the limit: counting and recording an
// attempt is one locked step, so of 20 simultaneous wrong passwords for
// one account from one address exactly the free allowance is checked.
func TestConcurrentGuessesRespectLimit(t *testing.T) {
	t.Parallel()
	s := newTestService(t)
	s.budget = newBudget(1000, time.Second) // isolate the database limit
	var checked, throttled atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, _, err := s.Login(context.Background(), "owner@example.com", "wrong password", "192.0.2.8", "test")
			switch {
			case errors.Is(err, ErrBadCredentials):
				checked.Add(1)
			case errors.Is(err, ErrThrottled):
				throttled.Add(1)
			default:
				t.Errorf("unexpected: %v", err)
			}
		})
	}
	wg.Wait()
	if checked.Load() != int64(slowPair.free) || throttled.Load() != 20-int64(slowPair.free) {
		t.Errorf("checked %d, throttled %d; want %d checked", checked.Load(), throttled.Load(), slowPair.free)
	}
}
