package faults

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/e2e/faultproxy"
	"github.com/callplane/callplane/e2e/harness"
	"github.com/callplane/callplane/nodes/alert/smtptest"
)

// Sizes of a scenario's cluster.
const (
	numNodes = 4 // media nodes (failover policy auto: a down node's calls move)
	numCalls = 8
	alertTo  = "oncall@faults.callplane.test"
)

// cluster is one scenario's Callplane: two call managers sharing a
// database, each reached by agents through its own fault proxy, an SMTP
// sink behind another, and media nodes (a SIP service process and a node
// agent process each).
type cluster struct {
	t     *testing.T
	dir   string
	dbURL string

	smtp      *smtptest.Server
	smtpProxy *faultproxy.Proxy
	cms       []*callManager
	nodes     []*node
	apiToken  string

	certFile, keyFile string

	mu    sync.Mutex
	procs []*harness.Proc
}

type callManager struct {
	*harness.Proc
	id      string
	addr    string // where it listens
	proxy   *faultproxy.Proxy
	dataDir string
	args    []string
}

// node is a worker server: its SIP service and its agent.
type node struct {
	name     string
	addr     string // SIP service address
	service  *harness.Proc
	agent    *harness.Proc
	stateDir string
	hookLog  string // the --on-assign hook appends "ACTION REF EPOCH"
	slowHook string // while this file exists, start hooks take 2 s
}

var dbCounter atomic.Int64

// newCluster starts a scenario's cluster on a fresh database of the shared
// Postgres, or on dbURL when given, and waits until every node is up and
// every call is active.
func newCluster(t *testing.T, dbURL string) *cluster {
	t.Helper()
	requireSetup(t)
	dir, err := os.MkdirTemp(tmpRoot, "scenario")
	if err != nil {
		t.Fatal(err)
	}
	if dbURL == "" {
		name := fmt.Sprintf("faults_%d", dbCounter.Add(1))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.EnsureDatabase(ctx, name); err != nil {
			t.Fatalf("create database: %v", err)
		}
		dbURL = pg.URL(name)
	}
	c := &cluster{t: t, dir: dir, dbURL: dbURL, smtp: smtptest.Start(t)}
	c.certFile, c.keyFile = harness.WriteCert(t, dir)
	if c.smtpProxy, err = proxies.Proxy("smtp", c.smtp.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	// cm-a starts first and takes the lease; cm-b starts once cm-a has
	// advertised itself, so join commands list both.
	c.cms = append(c.cms, c.startCallManager("cm-a"))
	harness.Poll(t, 60*time.Second, "cm-a to lead", func() (bool, string) {
		h, err := c.leader()
		return h == "cm-a", fmt.Sprint(h, err)
	})
	c.cms = append(c.cms, c.startCallManager("cm-b"))
	c.apiToken = c.cli("apitoken", "create", "--name", "faults")
	for i := range numNodes {
		c.nodes = append(c.nodes, c.addNode(fmt.Sprintf("m%d", i+1)))
	}
	harness.Poll(t, 90*time.Second, "every node up", func() (bool, string) {
		h := c.health()
		for _, n := range c.nodes {
			if h[n.name] != "up" {
				return false, fmt.Sprint(h)
			}
		}
		return true, ""
	})
	for i := range numCalls {
		c.placeCall(fmt.Sprintf("call-%d", i+1))
	}
	c.waitActive(90 * time.Second)
	return c
}

func (c *cluster) track(p *harness.Proc) {
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
}

func (c *cluster) dumpLogs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		c.t.Logf("---- log of %s (last 60 lines) ----\n%s", p.Name, p.Tail(60))
	}
}

func (c *cluster) startCallManager(id string) *callManager {
	t := c.t
	t.Helper()
	addr := harness.FreeTCP(t)
	proxy, err := proxies.Proxy(id, addr)
	if err != nil {
		t.Fatal(err)
	}
	cm := &callManager{id: id, addr: addr, proxy: proxy, dataDir: filepath.Join(c.dir, id)}
	cm.args = []string{"serve",
		"--listen", addr, "--data-dir", cm.dataDir, "--database-url", c.dbURL,
		"--smtp-url", "smtp://" + c.smtpProxy.Addr + "?tls=none",
		"--alert-from", "callplane@faults.callplane.test", "--alert-to", alertTo,
		"--tls-cert", c.certFile, "--tls-key", c.keyFile,
		"--public-url", "https://" + proxy.Addr, "--instance-id", id, "--log-level", "info",
		"--sip-listen", "127.0.0.1:0"}
	c.launch(cm)
	return cm
}

// launch starts (or restarts) a call manager and waits until it serves.
func (c *cluster) launch(cm *callManager) {
	t := c.t
	t.Helper()
	cm.Proc = harness.Start(t, cm.id, c.dir, nil, filepath.Join(binDir, "callmanager"), cm.args...)
	c.track(cm.Proc)
	harness.Poll(t, 60*time.Second, cm.id+" ready", func() (bool, string) {
		if cm.Exited() {
			t.Fatalf("%s exited during start (%v):\n%s", cm.id, cm.Err(), cm.Tail(40))
		}
		resp, err := insecure.Get("https://" + cm.addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	harness.Poll(t, 60*time.Second, cm.id+" advertised", func() (bool, string) {
		var n int
		err := c.queryRow("SELECT count(*) FROM settings WHERE key = $1", []any{"instance:" + cm.id}, &n)
		return n == 1, fmt.Sprint(err)
	})
}

var insecure = &http.Client{
	Timeout: 10 * time.Second,
	// Loopback only: the cluster's certificate is made by the test.
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// cli runs a callmanager administration command against the database, as
// an operator on cm-a's host would, and returns its stdout.
func (c *cluster) cli(args ...string) string {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cm := c.cms[0]
	args = append(args, "--database-url", c.dbURL, "--data-dir", cm.dataDir, "--listen", cm.addr,
		"--public-url", "https://"+cm.proxy.Addr, "--tls-cert", c.certFile, "--tls-key", c.keyFile)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "callmanager"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("callmanager %s: %v: %s", args[0], err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// addNode registers a media node, starts its SIP service, enrols it with
// the join command "callmanager token create" prints (which must name
// both call managers) and runs its agent.
func (c *cluster) addNode(name string) *node {
	t := c.t
	t.Helper()
	n := &node{name: name, addr: harness.FreeSIP(t), stateDir: filepath.Join(c.dir, "agent-"+name)}
	n.hookLog = filepath.Join(c.dir, name+".hook.log")
	n.slowHook = filepath.Join(c.dir, name+".slow")
	c.startService(n)
	c.cli("node", "add", "--name", name, "--kind", "media", "--address", n.addr, "--capacity", "10")
	join := c.cli("token", "create", "--node", name)
	args := joinArgs(t, join, n.stateDir)
	for _, cm := range c.cms {
		if !strings.Contains(join, "https://"+cm.proxy.Addr) {
			t.Fatalf("join command %q does not name %s (https://%s)", join, cm.id, cm.proxy.Addr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(binDir, "nodeagent"), args...).CombinedOutput(); err != nil {
		t.Fatalf("nodeagent join for %s: %v\n%s", name, err, out)
	}
	c.startAgent(n)
	return n
}

func (c *cluster) startService(n *node) {
	n.service = harness.Start(c.t, "sip-"+n.name, c.dir, []string{serviceEnv + "=" + n.addr}, testBin)
	c.track(n.service)
	n.service.WaitLog(c.t, regexp.MustCompile(`sip service listening`), 30*time.Second)
}

// hook is the --on-assign command: it records each start and stop, and a
// start takes 2 s while the node's slow file exists.
func (n *node) hook() string {
	return fmt.Sprintf(`echo "$CALLPLANE_ACTION $CALLPLANE_REF $CALLPLANE_EPOCH" >> %s; if [ "$CALLPLANE_ACTION" = start ] && [ -e %s ]; then sleep 2; fi`,
		n.hookLog, n.slowHook)
}

func (c *cluster) startAgent(n *node) {
	n.agent = harness.Start(c.t, "agent-"+n.name, c.dir, nil, filepath.Join(binDir, "nodeagent"),
		"run", "--state-dir", n.stateDir, "--on-assign", n.hook())
	c.track(n.agent)
}

// joinArgs turns a printed join command into nodeagent arguments with our
// own state dir.
func joinArgs(t *testing.T, command, stateDir string) []string {
	t.Helper()
	f := strings.Fields(command)
	if len(f) < 4 || f[0] != "nodeagent" || f[1] != "join" {
		t.Fatalf("join command %q does not start with 'nodeagent join'", command)
	}
	args := []string{"join"}
	for i := 2; i+1 < len(f); i += 2 {
		v := f[i+1]
		if f[i] == "--state-dir" {
			v = stateDir
		}
		args = append(args, f[i], v)
	}
	return args
}

// fail kills a node as a dead host would: its service and its agent.
func (c *cluster) fail(n *node) {
	n.service.Kill()
	n.agent.Kill()
}

// api calls the admin API on cm (through no proxy: the operator's path).
func (c *cluster) api(method, path string, body, out any) (int, error) {
	var payload []byte
	if body != nil {
		payload, _ = json.Marshal(body)
	}
	var last error
	for _, cm := range c.cms {
		var rd io.Reader
		if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, _ := http.NewRequest(method, "https://"+cm.addr+path, rd)
		req.Header.Set("Authorization", "Bearer "+c.apiToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := insecure.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if out != nil && resp.StatusCode < 300 {
			if err := json.Unmarshal(b, out); err != nil {
				return resp.StatusCode, fmt.Errorf("%s %s: decode %q: %w", method, path, b, err)
			}
		}
		if resp.StatusCode >= 300 {
			return resp.StatusCode, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, b)
		}
		return resp.StatusCode, nil
	}
	return 0, last
}

func (c *cluster) placeCall(ref string) {
	c.t.Helper()
	if _, err := c.api("POST", "/api/v1/work", map[string]any{"kind": "call", "ref": ref, "cost": 1}, nil); err != nil {
		c.t.Fatalf("place %s: %v", ref, err)
	}
}

// waitActive waits until every live call is active on a node.
func (c *cluster) waitActive(timeout time.Duration) {
	c.t.Helper()
	harness.Poll(c.t, timeout, "every call active", c.allActive)
}

// allActive reports whether every live call is active on a node.
func (c *cluster) allActive() (bool, string) {
	w, err := c.work()
	if err != nil {
		return false, err.Error()
	}
	for ref, p := range w {
		if p.state != "active" {
			return false, fmt.Sprintf("%s %+v", ref, p)
		}
	}
	return len(w) > 0, fmt.Sprint(w)
}

// conn opens a database connection; on the failover scenario's multi-host
// URL it reaches whichever server is the primary.
func (c *cluster) conn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.dbURL)
}

func (c *cluster) queryRow(sql string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// rows runs sql and calls scan for each row.
func (c *cluster) rows(sql string, args []any, scan func(pgx.Rows) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// health is every node's health column.
func (c *cluster) health() map[string]string {
	out := map[string]string{}
	_ = c.rows("SELECT name, health FROM nodes", nil, func(r pgx.Rows) error {
		var n, h string
		if err := r.Scan(&n, &h); err != nil {
			return err
		}
		out[n] = h
		return nil
	})
	return out
}

// placement is where a live work item runs, and at which epoch.
type placement struct {
	node  string
	epoch int64
	state string
}

func (c *cluster) work() (map[string]placement, error) {
	out := map[string]placement{}
	err := c.rows(`SELECT w.ref, coalesce(n.name, ''), w.epoch, w.state FROM work w
		LEFT JOIN nodes n ON n.id = w.node_id WHERE w.state <> 'ended'`, nil, func(r pgx.Rows) error {
		var ref string
		var p placement
		if err := r.Scan(&ref, &p.node, &p.epoch, &p.state); err != nil {
			return err
		}
		out[ref] = p
		return nil
	})
	return out, err
}

// leader is the holder of the live lease, or "".
func (c *cluster) leader() (string, error) {
	var holder string
	var live bool
	if err := c.queryRow("SELECT holder, expires_at > now() FROM leader_lease WHERE id = 1", nil, &holder, &live); err != nil {
		return "", err
	}
	if !live {
		return "", nil
	}
	return holder, nil
}

func (c *cluster) cm(id string) *callManager {
	for _, cm := range c.cms {
		if cm.id == id {
			return cm
		}
	}
	c.t.Fatalf("no call manager %q", id)
	return nil
}

var checkerLine = regexp.MustCompile(`msg="health checker (started|stopped)"`)

// runningCheckers names the call managers whose health checker runs, from
// their logs: the last "health checker started|stopped" line of a live
// process.
func (c *cluster) runningCheckers() []string {
	var out []string
	for _, cm := range c.cms {
		if cm.Exited() {
			continue
		}
		m := checkerLine.FindAllStringSubmatch(cm.Log(), -1)
		if len(m) > 0 && m[len(m)-1][1] == "started" {
			out = append(out, cm.id)
		}
	}
	slices.Sort(out)
	return out
}
