package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/nodes"
)

// bench holds the processes of the scene.
type bench struct {
	o      options
	dir    string
	repo   string
	media  []string // the two media nodes' addresses
	direct string   // a third media node, called directly for the baseline
	stops  []func()
}

func (b *bench) stopAll() {
	for i := len(b.stops) - 1; i >= 0; i-- {
		b.stops[i]()
	}
}

func cpus() int { return runtime.NumCPU() }

// proxy is a running SIP proxy under measurement.
type proxy struct {
	name string
	addr string
	pid  int
	tree bool       // count the CPU of its child processes too (Kamailio's workers)
	live func() int // live calls it knows of, when it can tell
	// dbPid is its database's postmaster (0: none), whose CPU, with its
	// backends', is shown beside the proxy's.
	dbPid int
	// profile, with -profile, starts a CPU profile and a sampling of the
	// database's wait events for one step; the function it returns waits
	// for both and prints the waits.
	profile func(name string, d time.Duration) func()
	stop    func()
}

// cpu returns the CPU seconds (user and system) the proxy has used.
func (p *proxy) cpu() float64 { return treeCPU(p.pid, p.tree) }

// dbCPU returns the CPU seconds its database has used (0: none).
func (p *proxy) dbCPU() float64 {
	if p.dbPid == 0 {
		return 0
	}
	return treeCPU(p.dbPid, true)
}

func treeCPU(pid int, tree bool) float64 {
	pids := []int{pid}
	if tree {
		pids = append(pids, children(pid)...)
	}
	var ticks int64
	for _, pid := range pids {
		ticks += procTicks(pid)
	}
	return float64(ticks) / 100 // USER_HZ is 100 on Linux
}

// postmasterPid reads the postmaster's pid from the cluster's directory.
func postmasterPid(dir string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "*", "postmaster.pid"))
	files2, _ := filepath.Glob(filepath.Join(dir, "postmaster.pid"))
	for _, f := range append(files2, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])); err == nil {
			return pid
		}
	}
	return 0
}

func procTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// After the name: state(3) ppid(4) ... utime(14) stime(15).
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, c)
		}
	}
	return out
}

func freeTCP() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDP() int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// start runs a process with its output in a log file of the work dir.
func (b *bench) start(name string, args ...string) (*exec.Cmd, error) {
	return b.startEnv(name, nil, args...)
}

// startEnv is start with extra environment variables.
func (b *bench) startEnv(name string, env []string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = b.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	}
	b.stops = append(b.stops, stop)
	return cmd, nil
}

// startMedia runs a sipp media node (the tests' scenario: it answers
// OPTIONS, INVITE and BYE).
func (b *bench) startMedia(name string) string {
	port := freeUDP()
	_, err := b.start(name, "sipp", "-sf", filepath.Join(b.repo, "nodes/sipfront/testdata/media.xml"),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-nostdin", "-max_socket", "100")
	if err != nil {
		panic(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// waitSIP waits until a proxy answers OPTIONS.
func waitSIP(addr string) error {
	ua, err := sipgo.NewUA()
	if err != nil {
		return err
	}
	defer ua.Close()
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		return err
	}
	host, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := client.Do(ctx, sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port}))
		cancel()
		if err == nil && res.StatusCode == 200 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no answer to OPTIONS at %s", addr)
}

// startCallplane builds and runs `callmanager serve` with its SIP front
// door, on its own database, with the two media nodes registered and up.
func (b *bench) startCallplane(ctx context.Context, dbURL string) (*proxy, error) {
	bin := filepath.Join(b.dir, "callmanager")
	buildArgs := []string{"build", "-o", bin}
	var env []string
	pprofAddr := ""
	if b.o.profile != "" {
		// The same code with a pprof listener on loopback (cmd/callmanager/pprof_bench.go).
		pprofAddr = "127.0.0.1:" + strconv.Itoa(freeTCP())
		buildArgs = append(buildArgs, "-tags", "benchpprof")
		env = []string{"CALLPLANE_BENCH_PPROF=" + pprofAddr}
	}
	build := exec.Command("go", append(buildArgs, "./cmd/callmanager")...)
	build.Dir = b.repo
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build callmanager: %v\n%s", err, out)
	}
	pool, err := db.Open(ctx, dbURL, 4)
	if err != nil {
		return nil, err
	}
	b.stops = append(b.stops, pool.Close)
	if err := db.Migrate(ctx, pool, nil); err != nil {
		return nil, err
	}
	svc := nodes.NewService(pool, nil)
	// The media nodes are the sipp processes; no agent runs beside them,
	// so the health checker is kept out of the measurement.
	if _, err := pool.Exec(ctx, `INSERT INTO settings (key, value) VALUES ('probe_interval', '1h')`); err != nil {
		return nil, err
	}
	capacity := strconv.Itoa(max(b.o.concurrent, 10000))
	for i, addr := range b.media {
		if _, err := svc.AddNode(ctx, nodes.Actor{Name: "bench"}, nodes.NodeInput{
			Name: fmt.Sprintf("media-%d", i+1), Kind: nodes.KindMedia, Address: addr, Capacity: capacity,
		}); err != nil {
			return nil, err
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE nodes SET health = 'up', enrolled_at = now(), last_heartbeat_at = now()`); err != nil {
		return nil, err
	}
	// Heartbeats stand in for the agents (an enrolled node whose agent
	// goes quiet is not trusted), one statement a second, and so do their
	// acknowledgements of the calls assigned to them (without them the
	// leader places a call again after 30 s: the held calls would move
	// between the media nodes).
	hbCtx, hbStop := context.WithCancel(ctx)
	b.stops = append(b.stops, hbStop)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				// Locked in id order, as the agents' heartbeat batches and
				// every placement lock them: in the heap's order, which
				// updates change, it deadlocks with the front door.
				_, _ = pool.Exec(hbCtx, `UPDATE nodes SET last_heartbeat_at = now()
					WHERE id IN (SELECT id FROM nodes ORDER BY id FOR UPDATE)`)
				_, _ = pool.Exec(hbCtx, `UPDATE work SET state = 'active', updated_at = now()
					WHERE kind = 'call' AND state = 'assigned' AND updated_at < now() - interval '5 seconds'`)
			}
		}
	}()
	addr := "127.0.0.1:" + strconv.Itoa(freeUDP())
	cmd, err := b.startEnv("callmanager", env, bin, "serve", "--database-url", dbURL, "--data-dir", filepath.Join(b.dir, "cm"),
		"--listen", "127.0.0.1:0", "--sip-listen", addr, "--log-level", "warn", "--instance-id", "bench")
	if err != nil {
		return nil, err
	}
	if err := waitSIP(addr); err != nil {
		return nil, err
	}
	p := &proxy{name: "callplane", addr: addr, pid: cmd.Process.Pid, stop: b.stops[len(b.stops)-1],
		dbPid: postmasterPid(filepath.Join(b.dir, "pg"))}
	p.live = func() int { return liveCalls(pool) }
	if pprofAddr != "" {
		p.profile = func(name string, d time.Duration) func() { return b.profileStep(pool, pprofAddr, name, d) }
	}
	return p, nil
}

func liveCalls(pool *pgxpool.Pool) int {
	var n int
	_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM work WHERE kind = 'call' AND state IN ('assigned', 'active')`).Scan(&n)
	return n
}

// startKamailio runs Kamailio with the committed dispatcher config over
// the same two media nodes.
func (b *bench) startKamailio() (*proxy, error) {
	tmpl, err := os.ReadFile(filepath.Join(b.repo, "e2e/sipbench/kamailio.cfg"))
	if err != nil {
		return nil, err
	}
	list := filepath.Join(b.dir, "dispatcher.list")
	var ds strings.Builder
	for _, m := range b.media {
		fmt.Fprintf(&ds, "1 sip:%s\n", m)
	}
	if err := os.WriteFile(list, []byte(ds.String()), 0o644); err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(freeUDP())
	mpath := "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
	if out, err := exec.Command("sh", "-c", "ls -d /usr/lib/*/kamailio/modules/ | head -1").Output(); err == nil && len(out) > 0 {
		mpath = strings.TrimSpace(string(out))
	}
	cfg := strings.NewReplacer("__LISTEN__", addr, "__MPATH__", mpath, "__DSLIST__", list).Replace(string(tmpl))
	cfgFile := filepath.Join(b.dir, "kamailio.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd, err := b.start("kamailio", "kamailio", "-DD", "-E", "-f", cfgFile, "-m", "256", "-M", "16")
	if err != nil {
		return nil, err
	}
	if err := waitSIP(addr); err != nil {
		return nil, err
	}
	return &proxy{name: "kamailio", addr: addr, pid: cmd.Process.Pid, tree: true, stop: b.stops[len(b.stops)-1]}, nil
}

// udpDrops is how many datagrams the kernel dropped at the UDP sockets
// bound to these loopback addresses because their receive buffers were
// full (/proc/net/udp's drops column): lost requests and responses that
// SIP retransmits only after T1 (500 ms).
func udpDrops(addrs ...string) int {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0
	}
	ports := map[string]bool{}
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if n, err2 := strconv.Atoi(p); err == nil && err2 == nil {
			ports[fmt.Sprintf("%04X", n)] = true
		}
	}
	total := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 13 {
			continue
		}
		local := f[1]
		if i := strings.LastIndexByte(local, ':'); i < 0 || !ports[local[i+1:]] {
			continue
		}
		n, _ := strconv.Atoi(f[len(f)-1])
		total += n
	}
	return total
}
