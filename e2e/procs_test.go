package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/e2e/harness"
	"github.com/callplane/callplane/nodes/alert/smtptest"
)

// proc is a child process run by e2e/harness (own process group, output
// in a log file, stopped when the test ends), with this package's names.
type proc struct {
	*harness.Proc
	name string
}

func startProc(t *testing.T, name, logDir, bin string, args ...string) *proc {
	t.Helper()
	return &proc{Proc: harness.Start(t, name, logDir, nil, bin, args...), name: name}
}

func (p *proc) stop(grace time.Duration) bool { return p.Stop(grace) }
func (p *proc) kill()                         { p.Kill() }
func (p *proc) exited() bool                  { return p.Exited() }
func (p *proc) tail(n int) string             { return p.Tail(n) }

func (p *proc) waitLog(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	return p.WaitLog(t, re, timeout)
}

// cluster is one test's Callplane: call manager instances sharing a fresh
// database, an SMTP sink, and the agents the test starts.
type cluster struct {
	t     *testing.T
	dir   string
	dbURL string
	smtp  *smtptest.Server
	cms   []*callManager
	// vip fronts the instances; join commands and agents use it.
	vip               *vip
	certFile, keyFile string

	mu    sync.Mutex
	procs []*proc // every process, for the logs on failure
}

// callManager is one running "callmanager serve".
type callManager struct {
	*proc
	id      string
	addr    string // 127.0.0.1:PORT
	url     string // https://127.0.0.1:PORT
	dataDir string
}

var dbCounter atomic.Int64

const alertTo = "oncall@e2e.callplane.test"

// newCluster starts n call manager instances on one fresh database. The
// first is started (and migrates) alone, then the others.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	requireSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("e2e_%d", dbCounter.Add(1))
	if err := pg.EnsureDatabase(ctx, name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	c := &cluster{t: t, dir: t.TempDir(), dbURL: pg.URL(name), smtp: smtptest.Start(t), vip: startVIP(t)}
	c.certFile, c.keyFile = writeCert(t, c.dir)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	ids := []string{"cm-a", "cm-b", "cm-c"}
	var addrs []string
	for i := range n {
		c.cms = append(c.cms, c.startCallManager(ids[i]))
		addrs = append(addrs, c.cms[i].addr)
		c.vip.setBackends(addrs...)
	}
	return c
}

func (c *cluster) track(p *proc) {
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
}

// dumpLogs prints the tail of every process log, for a failed test.
func (c *cluster) dumpLogs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		c.t.Logf("---- log of %s (last 80 lines) ----\n%s", p.name, p.tail(80))
	}
}

func (c *cluster) startCallManager(id string) *callManager {
	t := c.t
	t.Helper()
	addr := freeTCP(t)
	dataDir := filepath.Join(c.dir, id)
	p := startProc(t, id, c.dir, filepath.Join(binDir, "callmanager"), "serve",
		"--listen", addr, "--data-dir", dataDir, "--database-url", c.dbURL,
		"--smtp-url", c.smtp.URL(), "--alert-from", "callplane@e2e.callplane.test", "--alert-to", alertTo,
		"--tls-cert", c.certFile, "--tls-key", c.keyFile, "--public-url", c.vipURL(),
		"--instance-id", id, "--log-level", "info", "--sip-listen", "127.0.0.1:0")
	c.track(p)
	cm := &callManager{proc: p, id: id, addr: addr, url: "https://" + addr, dataDir: dataDir}
	waitReady(t, cm)
	return cm
}

// vipURL is the cluster's public URL: what agents and emails use.
func (c *cluster) vipURL() string { return "https://" + c.vip.addr() }

// setupCode reads the one-time setup code from the instance's log.
func (cm *callManager) setupCode(t *testing.T) string {
	return cm.waitLog(t, regexp.MustCompile(`setup_code=([^\s"]+)`), 30*time.Second)[1]
}

var insecure = &http.Client{
	Timeout: 10 * time.Second,
	// Loopback only: the call manager's certificate is self-signed.
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

func waitReady(t *testing.T, cm *callManager) {
	t.Helper()
	poll(t, 60*time.Second, cm.id+" ready", func() (bool, string) {
		if cm.exited() {
			t.Fatalf("%s exited during start (%v):\n%s", cm.id, cm.Err(), cm.tail(40))
		}
		resp, err := insecure.Get(cm.url + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
}

// poll calls cond every 200ms until it is true, failing after timeout
// with the last state cond described.
func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	harness.Poll(t, timeout, what, cond)
}

func freeTCP(t *testing.T) string { return harness.FreeTCP(t) }
func freeSIP(t *testing.T) string { return harness.FreeSIP(t) }

// cli runs a callmanager administration command against the cluster's
// database and returns its stdout.
func (c *cluster) cli(args ...string) string {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cm := c.cms[0]
	args = append(args, "--database-url", c.dbURL, "--data-dir", cm.dataDir, "--listen", cm.addr,
		"--public-url", c.vipURL(), "--tls-cert", c.certFile, "--tls-key", c.keyFile)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "callmanager"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("callmanager %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// agent is a node agent process enrolled for one node.
type agent struct {
	*proc
	node     string
	stateDir string
	listen   string
}

// joinArgs checks that the command is the join command DESIGN.md shows
// and returns its arguments with our own state dir.
func joinArgs(t *testing.T, command, stateDir string) []string {
	t.Helper()
	f := strings.Fields(command)
	if len(f) < 4 || f[0] != "nodeagent" || f[1] != "join" {
		t.Fatalf("join command %q does not start with 'nodeagent join'", command)
	}
	args := []string{"join"}
	seen := map[string]bool{}
	for i := 2; i < len(f); i += 2 {
		if i+1 >= len(f) || !strings.HasPrefix(f[i], "--") {
			t.Fatalf("join command %q: cannot parse at %q", command, f[i])
		}
		seen[f[i]] = true
		v := f[i+1]
		if f[i] == "--state-dir" {
			v = stateDir
		}
		args = append(args, f[i], v)
	}
	for _, need := range []string{"--server", "--token", "--ca-pin", "--state-dir"} {
		if !seen[need] {
			t.Fatalf("join command %q lacks %s", command, need)
		}
	}
	if !strings.Contains(command, "cpj_") {
		t.Fatalf("join command %q has no cpj_ token", command)
	}
	return args
}

// enrol runs the join command (as shown by the portal or the CLI) and
// then "nodeagent run --probe-listen listen".
func (c *cluster) enrol(node, joinCommand, listen string) *agent {
	t := c.t
	t.Helper()
	stateDir := filepath.Join(c.dir, "agent-"+node)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "nodeagent"), joinArgs(t, joinCommand, stateDir)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nodeagent join for %s: %v\n%s", node, err, out)
	}
	p := startProc(t, "agent-"+node, c.dir, filepath.Join(binDir, "nodeagent"), "run", "--state-dir", stateDir, "--probe-listen", listen)
	c.track(p)
	return &agent{proc: p, node: node, stateDir: stateDir, listen: listen}
}

// api calls the admin API with a bearer token and decodes the JSON answer.
func (c *cluster) api(cm *callManager, token, method, path string, body, out any) int {
	t := c.t
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, cm.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := insecure.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %s: decode %q: %v", method, path, resp.Status, b, err)
		}
	}
	if resp.StatusCode >= 300 {
		t.Logf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return resp.StatusCode
}

type nodeJSON struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Address    string `json:"address"`
	AdminState string `json:"admin_state"`
	Health     string `json:"health"`
	Load       int    `json:"load"`
}

type workJSON struct {
	Ref   string `json:"ref"`
	Kind  string `json:"kind"`
	State string `json:"state"`
	Node  string `json:"node"`
}

// work lists the live work items by ref.
func (c *cluster) work(token string) map[string]workJSON {
	var out struct {
		Work []workJSON `json:"work"`
	}
	if st := c.api(c.cms[0], token, "GET", "/api/v1/work", nil, &out); st != 200 {
		c.t.Fatalf("GET /api/v1/work: %d", st)
	}
	m := map[string]workJSON{}
	for _, w := range out.Work {
		m[w.Ref] = w
	}
	return m
}

func (c *cluster) node(token, name string) nodeJSON {
	var n nodeJSON
	if st := c.api(c.cms[0], token, "GET", "/api/v1/nodes/"+name, nil, &n); st != 200 {
		c.t.Fatalf("GET /api/v1/nodes/%s: %d", name, st)
	}
	return n
}

// leader reads the lease holder from the database.
func (c *cluster) leader() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dbURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var holder string
	var live bool
	err = conn.QueryRow(ctx, "SELECT holder, expires_at > now() FROM leader_lease WHERE id = 1").Scan(&holder, &live)
	if err != nil {
		return "", err
	}
	if !live {
		return "", errors.New("lease expired (held last by " + strconv.Quote(holder) + ")")
	}
	return holder, nil
}
