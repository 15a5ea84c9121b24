// Command abuse is `make abuse`: it starts a real call manager (leader)
// and a follower on one local Postgres, four node agents heartbeating the
// follower, and repeats the hostile-client attacks of issue 16 against
// them — all on loopback, every loop bounded in count and time. It prints
// one row per attack: requests sent, 5xx answers, outages (healthy nodes
// seen suspect or down, or their work moved) and the leader's peak RSS.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/callplane/callplane/db/localpg"
)

const ownerEmail, ownerPassword = "owner@example.com", "abuse-owner-password-1"

type instance struct {
	cmd *exec.Cmd
	url string
	log *bytes.Buffer
}

type env struct {
	dir, bin, dbURL  string
	leader, follower *instance
	token            string // admin API token
	agents           []*exec.Cmd
	http             *http.Client
	// observer watches node health from its own address (127.0.0.9), so
	// the attacks' connection counts on 127.0.0.1 do not blind it.
	observer *http.Client
}

type result struct {
	attack   string
	requests int64
	fivexx   int64
	outages  int
	peakRSS  int64 // KiB
	note     string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "abuse:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := os.MkdirTemp("", "callplane-abuse-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := os.Chmod(root, 0o755); err != nil { // the postgres user must enter it
		return err
	}
	e := &env{dir: root, bin: filepath.Join(root, "bin")}
	e.http = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 200}, // loopback, our own instance
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	od := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	e.observer = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: od.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	fmt.Println("building callmanager and nodeagent …")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.bin+"/", "./cmd/callmanager", "./cmd/nodeagent")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	pg, err := localpg.Start(ctx, localpg.Options{Dir: filepath.Join(root, "postgres"), Log: quiet})
	if err != nil {
		return err
	}
	defer pg.Stop()
	if err := pg.EnsureDatabase(ctx, "callplane"); err != nil {
		return err
	}
	e.dbURL = pg.URL("callplane")
	defer e.stop()
	if err := e.setup(ctx); err != nil {
		return err
	}
	var results []result
	for _, a := range []struct {
		name string
		fn   func(context.Context, *env) result
	}{
		{"poison heartbeat (NUL, cut UTF-8)", poisonHeartbeat},
		{"100 concurrent logins, one address", concurrentLogins},
		{"300 trickled bodies", trickledBodies},
		{"NUL / invalid UTF-8 inputs", nulInputs},
		{"X-Forwarded-For spoofing", xffSpoofing},
		{"slow follower (3 pauses)", slowFollower},
	} {
		fmt.Printf("attack: %s …\n", a.name)
		resetPeak(e.leader.cmd.Process.Pid)
		watch := e.watchOutages(ctx)
		r := a.fn(ctx, e)
		// Let the health checker see what the attack did.
		time.Sleep(4 * time.Second)
		var suspect int
		r.outages, suspect = watch()
		if suspect > 0 {
			r.note += fmt.Sprintf("; %d node(s) briefly suspect", suspect)
		}
		r.attack = a.name
		r.peakRSS = peakRSS(e.leader.cmd.Process.Pid)
		results = append(results, r)
	}
	fmt.Println()
	fmt.Println("| attack | requests | 5xx | outages (nodes falsely down) | peak RSS (leader) | note |")
	fmt.Println("|---|---:|---:|---:|---:|---|")
	for _, r := range results {
		fmt.Printf("| %s | %d | %d | %d | %.0f MB | %s |\n", r.attack, r.requests, r.fivexx, r.outages, float64(r.peakRSS)/1024, r.note)
	}
	return nil
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (e *env) cli(ctx context.Context, stdin string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, filepath.Join(e.bin, "callmanager"), append(args, "--database-url", e.dbURL, "--data-dir", filepath.Join(e.dir, "cm1"))...)
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("callmanager %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func (e *env) start(ctx context.Context, name string) (*instance, error) {
	addr := freePort()
	in := &instance{url: "https://" + addr, log: &bytes.Buffer{}}
	in.cmd = exec.Command(filepath.Join(e.bin, "callmanager"), "serve", "--database-url", e.dbURL,
		"--data-dir", filepath.Join(e.dir, "cm1"), "--listen", addr, "--instance-id", name, "--log-level", "warn", "--sip-listen=")
	in.cmd.Stderr = in.log
	if err := in.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r, err := e.http.Get(in.url + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return in, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not start: %s", name, in.log.String())
		}
	}
}

func (e *env) setup(ctx context.Context) error {
	if _, err := e.cli(ctx, "", "migrate"); err != nil {
		return err
	}
	if _, err := e.cli(ctx, ownerPassword+"\n", "user", "add", "--email", ownerEmail, "--role", "owner"); err != nil {
		return err
	}
	tok, err := e.cli(ctx, "", "apitoken", "create", "--name", "abuse")
	if err != nil {
		return err
	}
	e.token = tok
	if e.leader, err = e.start(ctx, "leader"); err != nil {
		return err
	}
	// The leader holds the lease before the follower starts.
	time.Sleep(2 * time.Second)
	if e.follower, err = e.start(ctx, "follower"); err != nil {
		return err
	}
	for i := 1; i <= 4; i++ {
		name, probe := fmt.Sprintf("media-%d", i), freePort()
		if _, err := e.cli(ctx, "", "node", "add", "--name", name, "--kind", "media", "--address", probe, "--capacity", "50"); err != nil {
			return err
		}
		join, err := e.cli(ctx, "", "token", "create", "--node", name)
		if err != nil {
			return err
		}
		args := strings.Fields(join)[1:] // drop "nodeagent"
		state := filepath.Join(e.dir, name)
		for j, a := range args {
			switch {
			case a == "--state-dir":
				args[j+1] = state
			case a == "--server":
				args[j+1] = e.follower.url // agents talk to the follower
			}
		}
		if out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "nodeagent"), args...).CombinedOutput(); err != nil {
			return fmt.Errorf("join %s: %v: %s", name, err, out)
		}
		a := exec.Command(filepath.Join(e.bin, "nodeagent"), "run", "--state-dir", state, "--probe-listen", probe)
		if err := a.Start(); err != nil {
			return err
		}
		e.agents = append(e.agents, a)
	}
	// Work on the nodes, so a false failover shows as moved work.
	for i := range 40 {
		if r := e.api("POST", "/api/v1/work", e.token, fmt.Sprintf(`{"kind":"call","ref":"abuse-%d","cost":1}`, i)); r >= 500 {
			return fmt.Errorf("place work: %d", r)
		}
	}
	// Wait until every node is up.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if n := len(e.notUp()); n == 0 {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%d nodes never came up", n)
		}
	}
}

func (e *env) stop() {
	for _, a := range e.agents {
		_ = a.Process.Signal(syscall.SIGTERM)
		_ = a.Wait()
	}
	for _, in := range []*instance{e.follower, e.leader} {
		if in != nil {
			_ = in.cmd.Process.Signal(syscall.SIGCONT)
			_ = in.cmd.Process.Signal(syscall.SIGTERM)
			_ = in.cmd.Wait()
		}
	}
}

// api sends a JSON request to the leader and returns the status (0 on a
// transport error).
func (e *env) api(method, path, bearer, body string) int {
	req, _ := http.NewRequest(method, e.leader.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// notUp lists the nodes that are not up, per the admin API.
func (e *env) notUp() []string {
	req, _ := http.NewRequest("GET", e.leader.url+"/api/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := e.observer.Do(req)
	if err != nil {
		return []string{"(api unreachable)"}
	}
	defer resp.Body.Close()
	var out struct {
		Nodes []struct{ Name, Health string } `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return []string{"(api: " + resp.Status + ")"}
	}
	var bad []string
	for _, n := range out.Nodes {
		// The agents' nodes only: the poison node never serves.
		if strings.HasPrefix(n.Name, "media-") && n.Health != "up" {
			bad = append(bad, n.Name+":"+n.Health)
		}
	}
	return bad
}

// watchOutages polls node health during an attack; the returned function
// stops it and says how many distinct nodes were seen down, and how many
// suspect.
func (e *env) watchOutages(ctx context.Context) func() (int, int) {
	ctx, cancel := context.WithCancel(ctx)
	seen := map[string]bool{}
	suspect := map[string]bool{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, n := range e.notUp() {
				name, health, _ := strings.Cut(n, ":")
				mu.Lock()
				if health == "suspect" {
					suspect[name] = true
				} else {
					seen[name] = true
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return func() (int, int) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return len(seen), len(suspect)
	}
}

func resetPeak(pid int) { _ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) }

func peakRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

type counter struct{ requests, fivexx atomic.Int64 }

func (c *counter) note(status int) {
	c.requests.Add(1)
	if status >= 500 {
		c.fivexx.Add(1)
	}
}

func (c *counter) result(note string) result {
	return result{requests: c.requests.Load(), fivexx: c.fivexx.Load(), note: note}
}

// poisonHeartbeat enrols an extra node and heartbeats it with versions
// that once failed every heartbeat write: NUL, 63 bytes + a two-byte
// character, invalid UTF-8 — 300 beats over about 6 s.
func poisonHeartbeat(ctx context.Context, e *env) result {
	var c counter
	if _, err := e.cli(ctx, "", "node", "add", "--name", "poison", "--kind", "im", "--address", "127.0.0.1:1", "--capacity", "1"); err != nil {
		return c.result(err.Error())
	}
	join, _ := e.cli(ctx, "", "token", "create", "--node", "poison")
	tokArg := ""
	fs := strings.Fields(join)
	for i, f := range fs {
		if f == "--token" {
			tokArg = fs[i+1]
		}
	}
	req, _ := http.NewRequest("POST", e.leader.url+"/api/v1/enroll", strings.NewReader(`{"token":"`+tokArg+`"}`))
	resp, err := e.http.Do(req)
	if err != nil {
		return c.result(err.Error())
	}
	var enrolled struct{ Credential string }
	_ = json.NewDecoder(resp.Body).Decode(&enrolled)
	resp.Body.Close()
	versions := []string{`"\u0000"`, `"` + strings.Repeat("v", 63) + `é"`, "\"\xff\xfe\"", `"ok\u0000ok"`}
	for i := range 300 {
		c.note(e.api("POST", "/api/v1/heartbeat", enrolled.Credential, `{"load":1,"version":`+versions[i%len(versions)]+`}`))
		time.Sleep(20 * time.Millisecond)
	}
	// The node itself is not part of the health count (it never serves).
	_, _ = e.cli(ctx, "", "node", "disable", "poison")
	_, _ = e.cli(ctx, "", "node", "remove", "poison")
	return c.result("beats refused with 400; every other node's beats written")
}

func form(e *env, client *http.Client, path string, v url.Values, hdr map[string]string) int {
	req, _ := http.NewRequest("POST", e.leader.url+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.leader.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, val := range hdr {
		req.Header.Set(k, val)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// concurrentLogins sends 100 simultaneous wrong-password sign-ins from one
// address, twice.
func concurrentLogins(ctx context.Context, e *env) result {
	var c counter
	statuses := map[int]int{}
	var mu sync.Mutex
	start := time.Now()
	for round := range 2 {
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() {
				st := form(e, e.http, "/login", url.Values{"email": {fmt.Sprintf("user%d-%d@example.com", round, i%7)}, "password": {"wrong password"}}, nil)
				c.note(st)
				mu.Lock()
				statuses[st]++
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	return c.result(fmt.Sprintf("statuses %v in %s", statuses, time.Since(start).Round(100*time.Millisecond)))
}

// trickledBodies opens 300 connections that each send a POST's headers
// and then one byte a second, and records how long the server keeps them.
func trickledBodies(ctx context.Context, e *env) result {
	var c counter
	host := strings.TrimPrefix(e.leader.url, "https://")
	var longest atomic.Int64
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			start := time.Now()
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", host, &tls.Config{InsecureSkipVerify: true})
			c.requests.Add(1)
			if err != nil {
				refused.Add(1)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
			_ = conn.SetReadDeadline(time.Now().Add(45 * time.Second))
			got := make(chan string, 1)
			go func() { b, _ := io.ReadAll(conn); got <- string(b) }()
			for {
				select {
				case s := <-got:
					if strings.HasPrefix(s, "HTTP/1.1 5") {
						c.fivexx.Add(1)
					}
					longest.Store(max(longest.Load(), int64(time.Since(start))))
					return
				case <-time.After(time.Second):
					if _, err := conn.Write([]byte(" ")); err != nil {
						longest.Store(max(longest.Load(), int64(time.Since(start))))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	return c.result(fmt.Sprintf("longest held %s; %d refused by the per-client connection cap", time.Duration(longest.Load()).Round(100*time.Millisecond), refused.Load()))
}

// nulInputs posts NUL, invalid UTF-8 and control characters to the
// unauthenticated and admin routes.
func nulInputs(ctx context.Context, e *env) result {
	var c counter
	bad := []string{"a\x00b", "\xff\xfe", "\x1b[31m", strings.Repeat("é", 3000)}
	for _, b := range bad {
		v := url.Values{"email": {b}, "password": {b}, "code": {b}, "name": {b}, "next": {b}}
		c.note(form(e, e.http, "/login", v, nil))
		c.note(form(e, e.http, "/setup", v, nil))
		js, _ := json.Marshal(map[string]any{"kind": "call", "ref": b, "cost": 1})
		c.note(e.api("POST", "/api/v1/work", e.token, string(js)))
		js, _ = json.Marshal(map[string]any{"name": b, "kind": "media", "address": "127.0.0.1:9", "capacity": 1, "description": b})
		c.note(e.api("POST", "/api/v1/nodes", e.token, string(js)))
		c.note(e.api("POST", "/api/v1/enroll", "", `{"token":"`+b+`"}`))
		c.note(e.api("GET", "/api/v1/work?node="+url.QueryEscape(b), e.token, ""))
		c.note(e.api("GET", "/api/v1/nodes/"+url.PathEscape(b), e.token, ""))
		c.note(e.api("POST", "/api/v1/work", e.token, `{"kind":"call","ref":"x","cost":1}trailing`))
		c.note(e.api("POST", "/api/v1/work", e.token, `{"kind":"call","ref":"y","cost":1,"unknown":true}`))
	}
	return c.result("refused with 400 naming the field")
}

// xffSpoofing: 40 wrong sign-ins for the owner, each claiming another
// address in X-Forwarded-For (no proxy is trusted); then the owner signs
// in from their own address.
func xffSpoofing(ctx context.Context, e *env) result {
	var c counter
	for i := range 40 {
		c.note(form(e, e.http, "/login", url.Values{"email": {ownerEmail}, "password": {"guess"}}, map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)}))
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	owner := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	st := form(e, owner, "/login", url.Values{"email": {ownerEmail}, "password": {ownerPassword}}, nil)
	c.note(st)
	note := "spoofed header ignored; owner from another address signed in"
	if st != http.StatusSeeOther {
		note = fmt.Sprintf("owner sign-in from another address: %d", st)
	}
	return c.result(note)
}

// slowFollower stops the follower the agents talk to three times for 2 s
// (SIGSTOP), as a stalled instance would.
func slowFollower(ctx context.Context, e *env) result {
	var c counter
	p := e.follower.cmd.Process
	for range 3 {
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			return c.result(err.Error())
		}
		time.Sleep(2 * time.Second)
		_ = p.Signal(syscall.SIGCONT)
		time.Sleep(3 * time.Second)
		c.note(e.api("GET", "/readyz", "", ""))
	}
	var moved int
	req, _ := http.NewRequest("GET", e.leader.url+"/api/v1/work", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	if resp, err := e.http.Do(req); err == nil {
		var out struct {
			Work []struct{ Epoch int64 } `json:"work"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		for _, w := range out.Work {
			if w.Epoch > 1 {
				moved++
			}
		}
	}
	return c.result(fmt.Sprintf("%d of 40 work items moved", moved))
}
