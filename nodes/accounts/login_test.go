package accounts_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/accounts"
)

// The throttling tests rely on one slowdown rule: once a key has used its
// free failures, the next attempt must wait at least 15 s after the last
// failure. Each test makes its next attempt right after, so the waits
// never run out while it looks.

// Wrong passwords for one account from one address slow that account
// from that address only: the right password from another address, and
// another account from the guessing address, still get in.
func TestWrongPasswordsSlowOnlyThatAccountFromThatAddress(t *testing.T) {
	t.Parallel()
	e := setup(t)
	accounts.SetBudget(e.s, 1000, time.Hour) // isolate the database limits
	e.addUser("admin@example.com", accounts.RoleAdmin)
	guesser := addr(1)
	for i := range accounts.FreePerPair {
		if _, err := e.login(ownerEmail, fmt.Sprintf("wrong password %d", i), guesser); !errors.Is(err, accounts.ErrBadCredentials) {
			t.Fatalf("wrong password %d: %v", i, err)
		}
	}
	_, err := e.login(ownerEmail, password, guesser)
	wantThrottled(t, err, "the right password from the guessing address")
	if n := e.audits("login", "throttled"); n != 1 {
		t.Errorf("%d throttled sign-ins audited, want 1", n)
	}
	if n := e.audits("login", "error"); n != accounts.FreePerPair {
		t.Errorf("%d failed sign-ins audited, want %d", n, accounts.FreePerPair)
	}
	e.mustLogin(ownerEmail, password, addr(2))
	e.mustLogin("admin@example.com", password, guesser)
	e.noSecrets(password, "wrong password")
}

// Password spraying: wrong passwords for many accounts from one address
// slow that address, whatever the account; other addresses go on.
func TestPasswordSprayingSlowsTheAddress(t *testing.T) {
	t.Parallel()
	e := setup(t)
	accounts.SetBudget(e.s, 1000, time.Hour)
	sprayer := addr(1)
	for i := range accounts.FreePerAddress {
		if _, err := e.login(fmt.Sprintf("guess%d@example.com", i), "wrong password", sprayer); !errors.Is(err, accounts.ErrBadCredentials) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	_, err := e.login(ownerEmail, password, sprayer)
	wantThrottled(t, err, "a new account from the spraying address")
	e.mustLogin(ownerEmail, password, addr(2))
}

// Guessing one account from many addresses slows that account from
// addresses it never signed in from, but not from the owner's usual
// address: a distributed guesser cannot lock the owner out.
func TestDistributedGuessingSparesTheUsualAddress(t *testing.T) {
	t.Parallel()
	e := setup(t)
	usual := "198.51.100.7"
	e.mustLogin(ownerEmail, password, usual)
	for i := range accounts.FreePerAccount {
		if _, err := e.login(ownerEmail, "wrong password", addr(i+1)); !errors.Is(err, accounts.ErrBadCredentials) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	_, err := e.login(ownerEmail, password, addr(200))
	wantThrottled(t, err, "the account from a new address")
	e.mustLogin(ownerEmail, password, usual)
}

// A client over its budget is refused without a password check: a flood
// of sign-ins from one address costs no argon2id work past the burst.
func TestThrottledSignInsNeverHash(t *testing.T) {
	t.Parallel()
	e := setup(t)
	accounts.SetBudget(e.s, accounts.BudgetBurst, time.Hour) // no refill while the test runs, however slow
	before := e.s.HashStats().Total
	throttled := 0
	for i := range accounts.BudgetBurst + 15 {
		_, err := e.login(fmt.Sprintf("nobody%d@example.com", i), "wrong password", "192.0.2.7")
		if errors.Is(err, accounts.ErrThrottled) {
			throttled++
		}
	}
	if hashed := e.s.HashStats().Total - before; hashed > accounts.BudgetBurst {
		t.Errorf("%d password checks for one client, budget %d", hashed, accounts.BudgetBurst)
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
	e := setup(t)
	accounts.SetBudget(e.s, 1000, time.Hour)
	var checked, throttled atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := e.login(ownerEmail, "wrong password", "192.0.2.8")
			switch {
			case errors.Is(err, accounts.ErrBadCredentials):
				checked.Add(1)
			case errors.Is(err, accounts.ErrThrottled):
				throttled.Add(1)
			default:
				t.Errorf("unexpected: %v", err)
			}
		})
	}
	wg.Wait()
	if checked.Load() != int64(accounts.FreePerPair) || throttled.Load() != 20-int64(accounts.FreePerPair) {
		t.Errorf("checked %d, throttled %d; want %d checked", checked.Load(), throttled.Load(), accounts.FreePerPair)
	}
}

// However many sign-ins arrive together, at most the pool's workers hash
// at once; the rest wait for a worker. The gate holds each hash on its
// worker, so the gauges show the pool full, whatever the machine's speed.
// All the sign-ins overlap, under the account's free allowance, so none
// may be throttled either (they once were, "try again in 0s", when a
// failure committed while one waited for the keys' lock seemed to lie in
// its future).
func TestHashingConcurrencyBounded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	accounts.SetBudget(e.s, 1000, time.Hour)
	const workers, logins = 2, 8
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	// A sign-in may wait an hour for a worker, and every hash waits at the
	// gate until the test opens it: nothing here races a clock. The test
	// only waits, under generous bounds, for states that must come.
	accounts.SetHashPool(e.s, workers, time.Hour, func() { <-release })

	errs := make(chan error, logins)
	for i := range logins {
		go func() {
			_, err := e.login(ownerEmail, password, addr(i+1))
			errs <- err
		}()
	}
	// The gauges are read while the sign-ins move: one counted as waiting
	// may not have taken a free worker yet. So wait for the one state
	// the pool must settle in, every worker held at the gate and the rest
	// queued; a sign-in that ends early, or more hashes running than
	// workers, fails at once.
	waitFor(t, "every worker busy and the other sign-ins queued", func() bool {
		select {
		case err := <-errs:
			t.Fatalf("a sign-in ended before any hash was let through: %v (pool %+v)", err, e.s.HashStats())
		default:
		}
		st := e.s.HashStats()
		if st.Running > workers || st.Peak > workers {
			t.Fatalf("more hashes at once than the pool's %d workers: %+v", workers, st)
		}
		return st.Running == workers && st.Waiting == logins-workers
	})
	if st := e.s.HashStats(); st.Workers != workers || st.Total != workers {
		t.Errorf("pool with every sign-in in: %+v, want %d workers and %d hashes started", st, workers, workers)
	}
	open()
	deadline := time.After(time.Minute)
	for range logins {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("sign-in: %v", err)
			}
		case <-deadline:
			t.Fatalf("sign-ins still running a minute after the gate opened (pool %+v)", e.s.HashStats())
		}
	}
	if st := e.s.HashStats(); st.Peak != workers || st.Total != logins || st.Running != 0 || st.Waiting != 0 {
		t.Errorf("pool after the sign-ins: %+v, want peak %d and %d hashes", st, workers, logins)
	}
}

// A sign-in that finds no free worker in time is ErrBusy, not an unbounded
// queue; it was never checked, so it counts as no failed guess.
func TestNoFreeHasherIsBusyNotAFailure(t *testing.T) {
	t.Parallel()
	e := setup(t)
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open)
	// The worker stays held until the test opens the gate, so the short
	// wait always runs out: it bounds the test's length, not a race.
	accounts.SetHashPool(e.s, 1, 50*time.Millisecond, func() { <-release })
	first := make(chan error, 1)
	go func() {
		_, err := e.login(ownerEmail, password, addr(1))
		first <- err
	}()
	waitFor(t, "the first sign-in on the only worker", func() bool { return e.s.HashStats().Running == 1 })
	if _, err := e.login(ownerEmail, "wrong password", addr(2)); !errors.Is(err, accounts.ErrBusy) {
		t.Fatalf("sign-in with no free worker: %v, want ErrBusy", err)
	}
	open()
	if err := <-first; err != nil {
		t.Fatalf("first sign-in: %v", err)
	}
	if n := e.count("SELECT count(*) FROM login_failures"); n != 0 {
		t.Errorf("%d failures recorded, want none", n)
	}
	if n := e.audits("login", "error"); n != 0 {
		t.Errorf("the busy sign-in was audited as a failure")
	}
}
