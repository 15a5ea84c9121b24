package e2e

import (
	"encoding/json"
	"io"
	"syscall"
	"testing"
	"time"
)

// readyzChecker reads /readyz's report of the health checker.
func readyzChecker(t *testing.T, cm *callManager) (leader string, lastRound time.Time, stalled bool) {
	t.Helper()
	resp, err := insecure.Get(cm.url + "/readyz")
	if err != nil {
		return "", time.Time{}, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Checker struct {
			Leader    string    `json:"leader"`
			LastRound time.Time `json:"last_round_at"`
			Stalled   bool      `json:"stalled"`
		} `json:"checker"`
	}
	_ = json.Unmarshal(b, &r)
	return r.Checker.Leader, r.Checker.LastRound, r.Checker.Stalled
}

// The leader process is stopped (SIGSTOP) for 3.6 s — past two thirds of
// its 5 s lease, so it stops trusting the lease, but not past the lease,
// so its renewal succeeds with the same epoch — and continued. Its health
// checker must run rounds again, as /readyz reports from the database.
func TestPausedLeaderResumesItsChecker(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	cm := c.cms[0]
	poll(t, 30*time.Second, "a first checker round", func() (bool, string) {
		leader, last, _ := readyzChecker(t, cm)
		return leader == cm.id && !last.IsZero(), leader
	})
	if err := cm.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3600 * time.Millisecond) // the fault: a 3.6 s pause
	if err := cm.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	poll(t, 30*time.Second, "checker rounds after the pause", func() (bool, string) {
		leader, last, stalled := readyzChecker(t, cm)
		return leader == cm.id && last.After(resumed) && !stalled, leader + " " + last.String()
	})
}
