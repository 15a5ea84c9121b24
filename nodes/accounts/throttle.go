package accounts

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// Sign-in protection, in the order a request meets it:
//
//  1. a cost budget per client address (in memory, per instance): a
//     client that has spent its password checks is refused at once, so
//     throttled requests never hash;
//  2. failure counts in Postgres, shared by every instance, counted and
//     recorded in one locked step so concurrent guesses cannot overrun a
//     limit: past a free allowance each further attempt must wait longer
//     (a slowdown, never a lockout), per account and address, per address,
//     and per account from addresses it has never signed in from — so the
//     owner's correct password still works from their usual address while
//     others guess (NIST SP 800-63B 5.2.2);
//  3. a bounded pool of password hashers: argon2id costs 19 MiB and tens
//     of milliseconds a check, so at most HashWorkers run at once and a
//     request that cannot get one in time is answered 503.

// throttleWindow is how long a failed attempt counts.
const throttleWindow = 15 * time.Minute

// ThrottledError is ErrThrottled with how long to wait.
type ThrottledError struct{ Wait time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many sign-in attempts; try again in %s", e.Wait.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrThrottled) true, and so the error of
// kind problem.ErrThrottled.
func (e *ThrottledError) Unwrap() error { return ErrThrottled }

// RetryAfter is the wait in whole seconds, at least 1.
func (e *ThrottledError) RetryAfter() int { return max(1, int(math.Ceil(e.Wait.Seconds()))) }

// ErrBusy: no password hasher came free in time.
var ErrBusy = problem.New(problem.ErrUnavailable, "the server is busy checking other sign-ins; try again in a few seconds")

// slowdown is the rule for one kind of key: free failures within the
// window, then the next attempt must wait first after the last failure,
// and each further one twice as long as the one before, up to maxWait.
type slowdown struct {
	free    int
	first   time.Duration
	maxWait time.Duration
}

var (
	// One account from one address: the guesser's own slowdown.
	slowPair = slowdown{free: 5, first: 30 * time.Second, maxWait: 15 * time.Minute}
	// One address, whatever the account (password spraying).
	slowAddress = slowdown{free: 20, first: 30 * time.Second, maxWait: 15 * time.Minute}
	// One account from addresses it never signed in from: gentle, so a
	// distributed guesser slows everyone new down but shuts no one out.
	slowAccount = slowdown{free: 10, first: 15 * time.Second, maxWait: 2 * time.Minute}
	// Setup-code guesses from one address.
	slowSetup = slowdown{free: 5, first: 30 * time.Second, maxWait: 15 * time.Minute}
)

// wait is how long after the last failure the next attempt may come,
// with failures already counted in the window.
func (sd slowdown) wait(failures int) time.Duration {
	over := failures - sd.free
	if over < 0 {
		return 0
	}
	if over > 20 {
		return sd.maxWait
	}
	return min(sd.first<<over, sd.maxWait)
}

type limitKey struct {
	key  string
	rule slowdown
}

// reserve checks the keys' failure counts and, when every key allows an
// attempt now, records the attempt as a failure of each key — both under
// the keys' advisory locks, in one transaction. It returns the rows to
// delete if the attempt succeeds.
func (s *Service) reserve(ctx context.Context, keys []limitKey) ([]int64, error) {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.key
	}
	var ids []int64
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.q.LoginAttemptLock(ctx, tx, names); err != nil {
			return err
		}
		stats, err := s.q.LoginFailureStats(ctx, tx, dbsqlc.LoginFailureStatsParams{Keys: names, WindowSeconds: throttleWindow.Seconds()})
		if err != nil {
			return err
		}
		var wait time.Duration
		for _, st := range stats {
			for _, k := range keys {
				if k.key == st.Key {
					wait = max(wait, k.rule.wait(int(st.Failures))-time.Duration(st.SinceLast*float64(time.Second)))
				}
			}
		}
		if wait > 0 {
			return &ThrottledError{Wait: wait}
		}
		ids, err = s.q.LoginAttemptInsert(ctx, tx, names)
		return err
	})
	return ids, err
}

// release forgets a reserved attempt that turned out right (or was never
// checked).
func (s *Service) release(ctx context.Context, ids []int64) {
	if err := s.q.LoginAttemptDelete(context.WithoutCancel(ctx), s.pool, ids); err != nil {
		s.log.Error("clear sign-in attempt", "err", err)
	}
}

// budget is a token bucket per client address of password checks.
type budget struct {
	burst float64
	every time.Duration // one check comes back this often
	mu    sync.Mutex
	b     map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// Defaults of the per-client budget: ten checks at once, then one every
// three seconds.
const (
	BudgetBurst = 10
	BudgetEvery = 3 * time.Second
)

func newBudget(burst int, every time.Duration) *budget {
	return &budget{burst: float64(burst), every: every, b: map[string]*bucket{}}
}

// take spends one check of addr's budget, or says how long until one is
// back.
func (b *budget) take(addr string, now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.b[addr]
	if !ok {
		if len(b.b) > 100000 {
			b.pruneLocked(now)
		}
		k = &bucket{tokens: b.burst, at: now}
		b.b[addr] = k
	}
	k.tokens = min(b.burst, k.tokens+float64(now.Sub(k.at))/float64(b.every))
	k.at = now
	if k.tokens < 1 {
		return false, time.Duration((1 - k.tokens) * float64(b.every))
	}
	k.tokens--
	return true, 0
}

// pruneLocked drops full buckets: they hold nothing a new one would not.
func (b *budget) pruneLocked(now time.Time) {
	for a, k := range b.b {
		if k.tokens+float64(now.Sub(k.at))/float64(b.every) >= b.burst {
			delete(b.b, a)
		}
	}
}

func (b *budget) prune(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked(now)
}

// hasher bounds how many argon2id computations run at once.
type hasher struct {
	slots chan struct{}
	wait  time.Duration
	// The pool's gauges and counters (HashStats).
	waiting, running, peak, runs atomic.Int64
	// gate, set only by tests, runs on a worker before the hash, so a
	// test can hold hashes in flight and look at the gauges.
	gate func()
}

// HashWorkers is how many password hashes run at once: one per core, at
// least two.
func HashWorkers() int { return max(2, runtime.GOMAXPROCS(0)) }

// HashWait is how long a sign-in waits for a free hasher before 503.
const HashWait = 10 * time.Second

func newHasher(n int, wait time.Duration) *hasher {
	return &hasher{slots: make(chan struct{}, n), wait: wait}
}

// HashStats is the password-hashing pool as it is now: its size, the
// hashes running and those waiting for a worker, the most that ever ran
// at once, and how many ran in all.
type HashStats struct {
	Workers int
	Running int64
	Waiting int64
	Peak    int64
	Total   int64
}

// HashStats returns the state of the password-hashing pool.
func (s *Service) HashStats() HashStats {
	h := s.hasher
	return HashStats{Workers: cap(h.slots), Running: h.running.Load(), Waiting: h.waiting.Load(), Peak: h.peak.Load(), Total: h.runs.Load()}
}

// acquire takes a worker, or fails with ErrBusy after the wait.
func (h *hasher) acquire(ctx context.Context) error {
	h.waiting.Add(1)
	defer h.waiting.Add(-1)
	t := time.NewTimer(h.wait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do runs fn on a free hasher, or fails with ErrBusy.
func (h *hasher) do(ctx context.Context, fn func()) error {
	if err := h.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-h.slots }()
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	h.runs.Add(1)
	if h.gate != nil {
		h.gate()
	}
	fn()
	return nil
}

// check verifies a password on the pool; a malformed stored hash is a
// wrong password.
func (h *hasher) check(ctx context.Context, password, encoded string) (bool, error) {
	var ok bool
	err := h.do(ctx, func() { ok, _ = CheckPassword(password, encoded) })
	return ok, err
}

// hash makes a new password hash on the pool.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	var out string
	var herr error
	if err := h.do(ctx, func() { out, herr = HashPassword(password) }); err != nil {
		return "", err
	}
	return out, herr
}
