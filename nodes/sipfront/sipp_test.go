package sipfront_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/callplane/callplane/server/servertest"
)

// sipp runs Debian's sip-tester: callers (the built-in uac scenario) and
// media nodes (testdata/*.xml) as real processes on loopback.

func sippPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp is not installed (Debian package sip-tester)")
	}
	return p
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// sippMedia starts a sipp media node playing scenario and returns its
// address; it stops with the test.
func sippMedia(t *testing.T, scenario string) string {
	t.Helper()
	sipp := sippPath(t)
	port := freeUDPPort(t)
	sf, _ := filepath.Abs(filepath.Join("testdata", scenario))
	cmd := exec.Command(sipp, "-sf", sf, "-i", "127.0.0.1", "-p", strconv.Itoa(port), "-nostdin", "-max_socket", "100")
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return "127.0.0.1:" + strconv.Itoa(port)
}

// sippCaller is a sipp uac run: calls calls at rate per second, each
// held for hold, through the front door at addr.
type sippCaller struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

func startSippCaller(t *testing.T, addr string, calls, rate int, hold time.Duration) *sippCaller {
	t.Helper()
	sipp := sippPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, sipp, "-sn", "uac", addr, "-s", "service", "-i", "127.0.0.1",
		"-p", strconv.Itoa(freeUDPPort(t)), "-m", strconv.Itoa(calls), "-r", strconv.Itoa(rate),
		"-d", strconv.Itoa(int(hold.Milliseconds())), "-l", strconv.Itoa(calls), "-nostdin", "-recv_timeout", "30000")
	cmd.Dir = t.TempDir()
	sc := &sippCaller{cmd: cmd, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &sc.out, &sc.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sc.done <- cmd.Wait() }()
	return sc
}

// wait returns sipp's exit code: 0 when every call succeeded, 1 when
// some failed.
func (sc *sippCaller) wait(t *testing.T) int {
	t.Helper()
	err := <-sc.done
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("sipp: %v\n%s", err, sc.out.String())
	return -1
}

func (e *env) liveCalls(t *testing.T, node string) int {
	return e.count(t, `SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id
		WHERE n.name = $1 AND w.kind = 'call' AND w.state IN ('assigned', 'active')`, node)
}

// Calls spread by weight, never above a node's capacity, are refused with
// 503 when every node is full, and end with their BYE.
func TestSippCallsSpreadByWeightWithinCapacity(t *testing.T) {
	t.Parallel()
	sippPath(t)
	e := setup(t, servertest.Options{})
	e.addMedia(t, "light", sippMedia(t, "media.xml"), 10, 100)
	e.addMedia(t, "heavy", sippMedia(t, "media.xml"), 10, 300)
	e.waitUp(t, "light", "heavy")

	// Eight calls held: the node with three times the weight takes about
	// three times the calls.
	held := startSippCaller(t, e.front.Addr(), 8, 4, 40*time.Second)
	waitFor(t, "8 calls live", func() bool { return e.liveCalls(t, "light")+e.liveCalls(t, "heavy") == 8 })
	light, heavy := e.liveCalls(t, "light"), e.liveCalls(t, "heavy")
	if light < 1 || heavy < 2*light {
		t.Fatalf("spread light=%d heavy=%d, want heavy about three times light", light, heavy)
	}

	// Twenty more: twelve fit (capacity 20 in all), eight get 503.
	more := startSippCaller(t, e.front.Addr(), 20, 10, 5*time.Second)
	maxLight, maxHeavy := 0, 0
	for polling := true; polling; {
		select {
		case err := <-more.done:
			polling = false
			more.done <- err // for wait
		case <-time.After(100 * time.Millisecond):
		}
		maxLight, maxHeavy = max(maxLight, e.liveCalls(t, "light")), max(maxHeavy, e.liveCalls(t, "heavy"))
		if used := e.count(t, "SELECT max(used - capacity) FROM nodes"); used > 0 {
			t.Fatalf("a node holds %d calls above its capacity", used)
		}
	}
	if code := more.wait(t); code == 0 {
		t.Fatalf("sipp saw no failed call, but 8 calls could not fit:\n%s", more.out.String())
	}
	if maxLight > 10 || maxHeavy > 10 || maxLight+maxHeavy < 19 {
		t.Fatalf("live calls peaked at light=%d heavy=%d, want both full and neither above 10", maxLight, maxHeavy)
	}
	if n := e.count(t, "SELECT count(*) FROM sip_calls WHERE state = 'failed' AND cause = 'no media node available'"); n != 8 {
		t.Fatalf("calls refused for want of a node = %d, want 8", n)
	}
	if code := held.wait(t); code != 0 {
		t.Fatalf("held calls failed (exit %d):\n%s", code, held.out.String())
	}
	waitFor(t, "every call ended by its BYE", func() bool {
		return e.count(t, "SELECT count(*) FROM sip_calls WHERE state = 'ended' AND cause = 'bye'") == 20 &&
			e.count(t, "SELECT count(*) FROM work WHERE kind = 'call' AND state <> 'ended'") == 0 &&
			e.count(t, "SELECT coalesce(sum(used), 0) FROM nodes") == 0
	})
}

// A node answering 503 and a silent one are skipped for the next; with
// only them left, callers get 503.
func TestSippFailoverToTheNextNode(t *testing.T) {
	t.Parallel()
	sippPath(t)
	e := setup(t, servertest.Options{})
	e.addMedia(t, "busy", sippMedia(t, "busy.xml"), 100, 100)
	e.addMedia(t, "silent", sippMedia(t, "silent.xml"), 50, 100)
	e.addMedia(t, "good", sippMedia(t, "media.xml"), 10, 100)
	e.waitUp(t, "busy", "silent", "good")

	calls := startSippCaller(t, e.front.Addr(), 3, 1, 0)
	if code := calls.wait(t); code != 0 {
		t.Fatalf("calls failed although one node answers (exit %d):\n%s", code, calls.out.String())
	}
	waitFor(t, "3 calls that failed over 503 then timeout and completed", func() bool {
		return e.count(t, "SELECT count(*) FROM sip_calls WHERE state = 'ended' AND cause = 'bye' AND failovers = '{503,timeout}'") == 3
	})

	e.exec(t, "UPDATE nodes SET admin_state = 'draining' WHERE name = 'good'")
	none := startSippCaller(t, e.front.Addr(), 2, 1, 0)
	if code := none.wait(t); code == 0 {
		t.Fatalf("calls succeeded with no answering node:\n%s", none.out.String())
	}
	waitFor(t, "2 calls refused after every try", func() bool {
		return e.count(t, "SELECT count(*) FROM sip_calls WHERE state = 'failed' AND cause = 'all tries failed'") == 2
	})
}
