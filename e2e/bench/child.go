package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/callplane/callplane/server"
)

// The call manager runs in a child process (this same binary, re-executed
// with childEnv set) so that its CPU time and RSS can be read from /proc
// apart from the load driver's. pprof is mounted on a second loopback
// listener in the child only; the product never serves it.
const childEnv = "CALLPLANE_BENCH_CHILD"

type childInfo struct {
	URL   string `json:"url"`
	Pin   string `json:"pin"`
	Pprof string `json:"pprof"`
}

// runChild is the call manager side: the real server.Server, with its
// health checker and alert mailer, as `callmanager serve` runs it.
func runChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// The level `callmanager serve` runs at by default, so its logging costs
	// are in the figures.
	level := slog.LevelInfo
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := server.Config{
		DatabaseURL: os.Getenv("DATABASE_URL"),
		DataDir:     os.Getenv("CALLPLANE_DATA_DIR"),
		Listen:      "127.0.0.1:0",
		InstanceID:  os.Getenv("BENCH_INSTANCE"),
		Version:     "bench",
		// Every simulated agent connects from 127.0.0.1.
		MaxConnsPerClient: -1,
	}
	s, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/heap", pprof.Index)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.Serve(pln, mux) }()
	// Stop when the parent goes away (stdin closes).
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		stop()
	}()
	info, _ := json.Marshal(childInfo{URL: s.URL(), Pin: s.Pin(), Pprof: "http://" + pln.Addr().String()})
	fmt.Println(string(info))
	return s.Run(ctx)
}

// child is a running call manager process.
type child struct {
	childInfo
	cmd     *exec.Cmd
	stdin   interface{ Close() error }
	logPath string
	done    chan struct{}
}

func startChild(ctx context.Context, dir, dbURL, instance string) (*child, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "callmanager.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=1", "DATABASE_URL="+dbURL, "CALLPLANE_DATA_DIR="+filepath.Join(dir, "data"),
		"BENCH_INSTANCE="+instance)
	cmd.Stderr = lf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: in, logPath: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(c.done) }()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "{") {
				lines <- sc.Text()
			}
		}
	}()
	select {
	case l := <-lines:
		if err := json.Unmarshal([]byte(l), &c.childInfo); err != nil {
			c.stop()
			return nil, err
		}
	case <-c.done:
		return nil, fmt.Errorf("call manager exited at start; see %s", logPath)
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, fmt.Errorf("call manager did not start within 60s; see %s", logPath)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the call manager to shut down and waits (bounded) for it.
func (c *child) stop() {
	_ = c.stdin.Close()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
