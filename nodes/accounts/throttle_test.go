package accounts

import (
	"testing"
	"time"
)

// Pure rules of throttle.go; the database-backed behaviour is tested
// from outside the package (login_test.go).

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
