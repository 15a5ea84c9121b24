// Command demo is "make demo": it builds Callplane, starts a call manager
// on the embedded default Postgres under .data/demo, a mailpit mail sink
// with its web inbox, and one node agent of each kind (two media nodes)
// enrolled through real join tokens; it places calls, IVRs, queues,
// meetings and IM shards through the admin API, prints where to look, and
// runs until Ctrl-C, which stops everything it started.
//
// Every run starts from a clean .data/demo, so re-running it is safe.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const mailpitVersion = "v1.33.1"

type config struct {
	listen   string // call manager, HTTPS
	mailUI   string // mailpit web inbox
	mailSMTP string // mailpit SMTP
	dataDir  string
	binDir   string
	version  string
	email    string
	password string
}

func main() {
	var cfg config
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:8443", "call manager HTTPS address")
	flag.StringVar(&cfg.mailUI, "mail-ui", "127.0.0.1:8025", "mailpit web inbox address")
	flag.StringVar(&cfg.mailSMTP, "mail-smtp", "127.0.0.1:1025", "mailpit SMTP address")
	flag.StringVar(&cfg.dataDir, "data-dir", ".data/demo", "demo state (removed and recreated at each start)")
	flag.StringVar(&cfg.binDir, "bin", "bin", "where the binaries are built")
	flag.StringVar(&cfg.version, "version", "demo", "version stamped into the binaries")
	flag.StringVar(&cfg.email, "email", "demo@callplane.local", "demo owner account")
	flag.StringVar(&cfg.password, "password", "", "demo owner password (default: generated)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{cfg: cfg}
	err := d.run(ctx)
	d.stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	cfg   config
	procs []*proc // in start order; stopped in reverse
	dbURL string
	token string
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("demo: "+format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run it from the repository root: make demo")
	}
	var err error
	if d.cfg.dataDir, err = filepath.Abs(d.cfg.dataDir); err != nil {
		return err
	}
	if d.cfg.binDir, err = filepath.Abs(d.cfg.binDir); err != nil {
		return err
	}
	for _, a := range []string{d.cfg.listen, d.cfg.mailUI, d.cfg.mailSMTP} {
		if !free(a) {
			return fmt.Errorf("%s is in use: is another demo (or make run) still running? Stop it first", a)
		}
	}
	if d.cfg.password == "" {
		d.cfg.password = "demo-" + strings.ToLower(rand.Text()[:16])
	}

	d.say("building callmanager and nodeagent into %s", d.cfg.binDir)
	if err := d.cmd(ctx, nil, "go", "build", "-ldflags", "-X main.version="+d.cfg.version, "-o", d.cfg.binDir+"/", "./cmd/callmanager", "./cmd/nodeagent"); err != nil {
		return err
	}
	mailpit := filepath.Join(d.cfg.binDir, "mailpit")
	if _, err := os.Stat(mailpit); err != nil {
		d.say("installing mailpit %s into %s (once)", mailpitVersion, d.cfg.binDir)
		env := append(os.Environ(), "GOBIN="+d.cfg.binDir, "GOTOOLCHAIN=local")
		if err := d.cmd(ctx, env, "go", "install", "github.com/axllent/mailpit@"+mailpitVersion); err != nil {
			return err
		}
	}

	// A clean state each run: the demo's database, agents and mailbox.
	if err := os.RemoveAll(d.cfg.dataDir); err != nil {
		return fmt.Errorf("remove the old demo state: %w", err)
	}
	logs := filepath.Join(d.cfg.dataDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	// The local Postgres runs as the postgres user when we are root; it
	// must be able to enter the data dir.
	if err := os.Chmod(d.cfg.dataDir, 0o755); err != nil {
		return err
	}

	d.say("starting mailpit: inbox http://%s, SMTP %s", d.cfg.mailUI, d.cfg.mailSMTP)
	mp, err := d.start("mailpit", logs, mailpit, "--listen", d.cfg.mailUI, "--smtp", d.cfg.mailSMTP,
		"--database", filepath.Join(d.cfg.dataDir, "mailpit.db"), "--disable-version-check", "--smtp-disable-rdns")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, mp, "http://"+d.cfg.mailUI+"/readyz", 30*time.Second); err != nil {
		return err
	}

	d.say("starting the call manager on https://%s (embedded Postgres under %s; first start runs initdb)", d.cfg.listen, d.cfg.dataDir)
	cmData := filepath.Join(d.cfg.dataDir, "callmanager")
	cm, err := d.start("callmanager", logs, filepath.Join(d.cfg.binDir, "callmanager"), "serve",
		"--data-dir", cmData, "--listen", d.cfg.listen,
		"--smtp-url", "smtp://"+d.cfg.mailSMTP+"?tls=none",
		"--alert-from", "callplane@demo.callplane.local", "--alert-to", "oncall@demo.callplane.local",
		"--instance-id", "demo-1")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, cm, "https://"+d.cfg.listen+"/readyz", 2*time.Minute); err != nil {
		return err
	}
	// Administrative commands reach the same database through the
	// running instance's Unix socket.
	d.dbURL = fmt.Sprintf("postgres://callplane@/callplane?host=%s&sslmode=disable", filepath.Join(cmData, "postgres", "run"))

	d.say("creating the owner account %s", d.cfg.email)
	if _, err := d.cli(ctx, strings.NewReader(d.cfg.password+"\n"), "user", "add", "--email", d.cfg.email, "--role", "owner"); err != nil {
		return err
	}

	type node struct{ name, kind, listen, address, capacity string }
	nodes := []node{
		{name: "media-1", kind: "media", capacity: "50"},
		{name: "media-2", kind: "media", capacity: "50"},
		{name: "ivr-1", kind: "ivr", capacity: "20"},
		{name: "queue-1", kind: "queue", capacity: "20"},
		{name: "meeting-1", kind: "meeting", capacity: "10"},
		{name: "im-1", kind: "im", capacity: "100"},
	}
	media1 := 0
	for i := range nodes {
		n := &nodes[i]
		if n.listen, err = freePort(n.kind); err != nil {
			return err
		}
		n.address = n.listen
		if n.kind == "meeting" {
			n.address = "http://" + n.listen + "/"
		}
		if _, err := d.cli(ctx, nil, "node", "add", "--name", n.name, "--kind", n.kind, "--address", n.address, "--capacity", n.capacity,
			"--description", "demo "+n.kind+" node"); err != nil {
			return err
		}
		stateDir := filepath.Join(d.cfg.dataDir, "agents", n.name)
		join, err := d.cli(ctx, nil, "token", "create", "--node", n.name, "--state-dir", stateDir)
		if err != nil {
			return err
		}
		args := strings.Fields(join)
		if len(args) < 2 || args[0] != "nodeagent" || args[1] != "join" {
			return fmt.Errorf("token create printed %q, not a nodeagent join command", join)
		}
		if err := d.cmd(ctx, nil, filepath.Join(d.cfg.binDir, "nodeagent"), args[1:]...); err != nil {
			return fmt.Errorf("enrol %s: %w", n.name, err)
		}
		ap, err := d.start("agent-"+n.name, logs, filepath.Join(d.cfg.binDir, "nodeagent"), "run",
			"--state-dir", stateDir, "--probe-listen", n.listen)
		if err != nil {
			return err
		}
		if n.name == "media-1" {
			media1 = ap.cmd.Process.Pid
		}
		d.say("enrolled %-9s (%s) at %s", n.name, n.kind, n.address)
	}

	if d.token, err = d.cli(ctx, nil, "apitoken", "create", "--name", "demo"); err != nil {
		return err
	}
	d.say("waiting for the health checker to see every node up")
	if err := d.waitUp(ctx, len(nodes), 60*time.Second); err != nil {
		return err
	}
	placed := 0
	work := []struct {
		kind, prefix string
		n, cost      int
	}{
		{"call", "call", 12, 1}, {"ivr", "ivr-main-menu", 1, 2}, {"ivr", "ivr-after-hours", 1, 2},
		{"queue", "queue-sales", 1, 3}, {"queue", "queue-support", 1, 3},
		{"meeting", "meeting-standup", 1, 2}, {"meeting", "meeting-board", 1, 4},
		{"im", "im-shard", 4, 5},
	}
	for _, w := range work {
		for i := 1; i <= w.n; i++ {
			ref := w.prefix
			if w.n > 1 {
				ref = fmt.Sprintf("%s-%d", w.prefix, i)
			}
			if err := d.api(ctx, "POST", "/api/v1/work", map[string]any{"kind": w.kind, "ref": ref, "cost": w.cost}); err != nil {
				return err
			}
			placed++
		}
	}
	d.say("placed %d work items (calls, IVRs, queues, meetings, IM shards)", placed)

	fmt.Printf(`
  Callplane demo is running.

  Portal       https://%s   (self-signed certificate: accept it in the browser)
  Sign in      %s
  Password     %s
  Mail inbox   http://%s   (mailpit: node down/recovered alerts land here)
  Logs         %s
  API token    %s   (e.g. curl -k -H "Authorization: Bearer $TOKEN" https://%s/api/v1/nodes)

  Try: kill one media agent and watch it go down, its calls move and the alert arrive:
       kill -KILL %d    (the agent of media-1)

  Press Ctrl-C to stop everything.
`, d.cfg.listen, d.cfg.email, d.cfg.password, d.cfg.mailUI, logs, d.token, d.cfg.listen,
		media1)

	// Run until Ctrl-C, or until the call manager or mailpit dies.
	select {
	case <-ctx.Done():
		fmt.Println()
		d.say("stopping")
		return nil
	case <-cm.done:
		return fmt.Errorf("the call manager exited (%v); see %s", cm.err, cm.logPath)
	case <-mp.done:
		return fmt.Errorf("mailpit exited (%v); see %s", mp.err, mp.logPath)
	}
}

// proc is a child in its own process group, so stopping it stops its
// children too (the call manager's Postgres stops with it).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func (d *demo) start(name, logDir, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	d.procs = append(d.procs, p)
	return p, nil
}

// stopAll stops the processes in reverse order: agents, call manager,
// mailpit. Each gets SIGTERM and 20 seconds before SIGKILL.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			d.say("%s did not stop within 20s: killing it", p.name)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	d.procs = nil
}

// cmd runs a command to completion, its output shown on failure.
func (d *demo) cmd(ctx context.Context, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Env = env
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// cli runs a callmanager administration command against the demo
// database and returns its stdout.
func (d *demo) cli(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args = append(args, "--database-url", d.dbURL, "--data-dir", filepath.Join(d.cfg.dataDir, "callmanager"), "--listen", d.cfg.listen)
	c := exec.CommandContext(ctx, filepath.Join(d.cfg.binDir, "callmanager"), args...)
	c.Stdin = stdin
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("callmanager %s: %v: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// insecure talks to the demo's own call manager on loopback, whose
// certificate is self-signed.
var insecure = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

func (d *demo) api(ctx context.Context, method, path string, body any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, method, "https://"+d.cfg.listen+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := insecure.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, rb)
	}
	return nil
}

func (d *demo) waitUp(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+d.cfg.listen+"/api/v1/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		if resp, err := insecure.Do(req); err == nil {
			var out struct {
				Nodes []struct{ Name, Health string } `json:"nodes"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			up := 0
			var states []string
			for _, n := range out.Nodes {
				if n.Health == "up" {
					up++
				}
				states = append(states, n.Name+"="+n.Health)
			}
			if up == want {
				return nil
			}
			last = strings.Join(states, " ")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("not every node came up within %v: %s", timeout, last)
}

// waitHTTP polls url until it answers 200, or the process exits.
func waitHTTP(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := insecure.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during start (%v); see %s", p.name, p.err, p.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer %s within %v; see %s", p.name, url, timeout, p.logPath)
}

func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// freePort returns a loopback address for a node's probe endpoint: free
// for UDP and TCP for the SIP kinds, TCP for the others.
func freePort(kind string) (string, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if kind == "meeting" || kind == "im" {
			return addr, nil
		}
		u, err := net.ListenPacket("udp", addr)
		if err == nil {
			u.Close()
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port")
}
