package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/agent"
	"github.com/callplane/callplane/nodes/agentproto"
)

const (
	testToken      = "cpj_ab12cd34.0123456789abcdefghijklmnopqrstuv"
	testCredential = "cpn_ab12cd34.secretsecretsecretsecretsecret00"
)

// TestMain lets the tests run the real main in a child process (the test
// binary re-executed), to check exit codes, stderr and signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("NODEAGENT_TEST_MAIN") == "1" {
		os.Args = append([]string{"nodeagent"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	pin := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, cfg Config)
	}{
		{name: "join flags", args: []string{"join", "--server", "https://cm:8443", "--token", testToken, "--ca-pin", pin, "--state-dir", "/s", "--address", "10.0.0.1:5060"},
			check: func(t *testing.T, cfg Config) {
				want := agent.JoinOptions{Servers: []string{"https://cm:8443"}, Token: testToken, CAPin: pin, StateDir: "/s", Address: "10.0.0.1:5060", Version: version}
				if cfg.Command != "join" || !reflect.DeepEqual(cfg.Join, want) {
					t.Fatalf("cfg.Join = %+v", cfg.Join)
				}
			}},
		{name: "join several servers", args: []string{"join", "--server", "https://a:8443,https://b:8443", "--server", "https://c:8443", "--token", testToken, "--ca-pin", pin, "--state-dir", "/s"},
			env: map[string]string{"NODEAGENT_SERVER": "https://env:1"},
			check: func(t *testing.T, cfg Config) {
				if !slices.Equal(cfg.Join.Servers, []string{"https://a:8443", "https://b:8443", "https://c:8443"}) {
					t.Fatalf("servers = %q, want the three flags' URLs (the flag replaces its env twin)", cfg.Join.Servers)
				}
			}},
		{name: "run servers", args: []string{"run", "--state-dir", "/s", "--server", "https://a:8443", "--server", "https://b:8443"},
			check: func(t *testing.T, cfg Config) {
				if !slices.Equal(cfg.Run.Servers, []string{"https://a:8443", "https://b:8443"}) {
					t.Fatalf("servers = %q", cfg.Run.Servers)
				}
			}},
		{name: "join env twins", args: []string{"join"},
			env: map[string]string{"NODEAGENT_SERVER": "https://env:1", "NODEAGENT_TOKEN": testToken, "NODEAGENT_CA_PIN": pin, "NODEAGENT_STATE_DIR": "/env"},
			check: func(t *testing.T, cfg Config) {
				if !slices.Equal(cfg.Join.Servers, []string{"https://env:1"}) || cfg.Join.StateDir != "/env" || cfg.Join.Token != testToken || cfg.Join.CAPin != pin {
					t.Fatalf("cfg.Join = %+v", cfg.Join)
				}
			}},
		{name: "flag wins over env", args: []string{"run", "--state-dir", "/flag"}, env: map[string]string{"NODEAGENT_STATE_DIR": "/env"},
			check: func(t *testing.T, cfg Config) {
				if cfg.Run.StateDir != "/flag" {
					t.Fatalf("state dir = %q", cfg.Run.StateDir)
				}
			}},
		{name: "run flags", args: []string{"run", "--state-dir", "/s", "--probe-listen", "127.0.0.1:5060", "--on-assign", "echo hi", "--log-level", "debug"},
			check: func(t *testing.T, cfg Config) {
				want := agent.RunOptions{StateDir: "/s", ProbeListen: "127.0.0.1:5060", OnAssign: "echo hi", Version: version,
					HookTimeout: agent.DefaultHookTimeout, HookAttempts: agent.DefaultHookAttempts, HookRetry: agent.DefaultHookRetry}
				if cfg.Command != "run" || !reflect.DeepEqual(cfg.Run, want) || cfg.LogLevel != slog.LevelDebug {
					t.Fatalf("cfg = %+v", cfg)
				}
			}},
		{name: "hook flags", args: []string{"run", "--state-dir", "/s", "--hook-attempts", "5", "--hook-retry", "250ms", "--hook-timeout", "30s"},
			check: func(t *testing.T, cfg Config) {
				if cfg.Run.HookAttempts != 5 || cfg.Run.HookRetry != 250*time.Millisecond || cfg.Run.HookTimeout != 30*time.Second {
					t.Fatalf("hook options = %d, %v, %v", cfg.Run.HookAttempts, cfg.Run.HookRetry, cfg.Run.HookTimeout)
				}
			}},
		{name: "hook env twins", args: []string{"run", "--state-dir", "/s"},
			env: map[string]string{"NODEAGENT_HOOK_ATTEMPTS": "1", "NODEAGENT_HOOK_RETRY": "2s", "NODEAGENT_HOOK_TIMEOUT": "5s"},
			check: func(t *testing.T, cfg Config) {
				if cfg.Run.HookAttempts != 1 || cfg.Run.HookRetry != 2*time.Second || cfg.Run.HookTimeout != 5*time.Second {
					t.Fatalf("hook options = %d, %v, %v", cfg.Run.HookAttempts, cfg.Run.HookRetry, cfg.Run.HookTimeout)
				}
			}},
		{name: "hook attempts zero", args: []string{"run", "--state-dir", "/s", "--hook-attempts", "0"}, wantErr: "invalid --hook-attempts"},
		{name: "hook attempts not a number", args: []string{"run", "--state-dir", "/s", "--hook-attempts", "three"}, wantErr: "invalid --hook-attempts"},
		{name: "hook retry without unit", args: []string{"run", "--state-dir", "/s", "--hook-retry", "1"}, wantErr: "invalid --hook-retry"},
		{name: "hook timeout zero", args: []string{"run", "--state-dir", "/s", "--hook-timeout", "0s"}, wantErr: "invalid --hook-timeout"},
		{name: "log level env", args: []string{"run"}, env: map[string]string{"NODEAGENT_STATE_DIR": "/s", "NODEAGENT_LOG_LEVEL": "warn"},
			check: func(t *testing.T, cfg Config) {
				if cfg.LogLevel != slog.LevelWarn {
					t.Fatalf("level = %v", cfg.LogLevel)
				}
			}},
		{name: "version", args: []string{"version"}},
		{name: "no command", args: nil, wantErr: "missing command"},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "join missing token", args: []string{"join", "--server", "https://cm:1", "--ca-pin", pin, "--state-dir", "/s"}, wantErr: "--token is required"},
		{name: "run missing state dir", args: []string{"run"}, wantErr: "--state-dir is required"},
		{name: "unknown flag", args: []string{"run", "--state-dir", "/s", "--bogus"}, wantErr: "flag provided but not defined: -bogus"},
		{name: "stray argument", args: []string{"run", "--state-dir", "/s", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "bad log level", args: []string{"run", "--state-dir", "/s", "--log-level", "loud"}, wantErr: "invalid --log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			cfg, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, &stdout, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig error = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			if tt.check != nil {
				tt.check(t, cfg)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"help"}, {"join", "-h"}, {"run", "--help"}} {
		var stdout bytes.Buffer
		_, err := parseConfig(args, func(string) string { return "" }, &stdout, io.Discard)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: err = %v, want flag.ErrHelp", args, err)
		}
		if !strings.Contains(stdout.String(), "state-dir") {
			t.Fatalf("%v: help lacks --state-dir:\n%s", args, stdout.String())
		}
	}
}

// fakeServer follows the agent API contract just enough for the command's
// tests: enrol, heartbeat with a chosen status, and an empty long poll.
type fakeServer struct {
	srv        *httptest.Server
	pin        string
	heartbeats atomic.Int32
	hbStatus   atomic.Int32
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /api/v1/enroll", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Token string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		if req.Token != testToken {
			reply(w, 401, map[string]string{"error": "invalid or expired join token"})
			return
		}
		reply(w, 200, map[string]any{"node_id": 5, "node_name": "ivr-1", "kind": "ivr", "credential": testCredential, "heartbeat_interval_ms": 20})
	})
	mux.HandleFunc("POST /api/v1/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		f.heartbeats.Add(1)
		if st := f.hbStatus.Load(); st != 0 {
			reply(w, int(st), map[string]string{"error": "nope"})
			return
		}
		reply(w, 200, map[string]any{"admin_state": "enabled", "heartbeat_interval_ms": 20})
	})
	mux.HandleFunc("GET /api/v1/assignments", func(w http.ResponseWriter, r *http.Request) {
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		select {
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
		reply(w, 200, map[string]any{"version": 1, "assignments": []any{}})
	})
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.pin = agentproto.PinOf(f.srv.Certificate())
	return f
}

func TestRunJoinCommand(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	dir := filepath.Join(t.TempDir(), "state")
	var stdout, stderr bytes.Buffer
	cfg, err := parseConfig([]string{"join", "--server", f.srv.URL, "--token", testToken, "--ca-pin", f.pin, "--state-dir", dir},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), cfg); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(stdout.String(), "joined as node ivr-1 (id 5, kind ivr)") {
		t.Fatalf("stdout = %q", stdout.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), "0123456789abcdefghijklmnopqrstuv") || strings.Contains(stderr.String(), testCredential) {
		t.Fatalf("secret in output:\n%s\n%s", stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "token_id=cpj_ab12cd34") {
		t.Errorf("token id not logged:\n%s", stderr.String())
	}
	if st, err := agent.Load(dir); err != nil || st.NodeName != "ivr-1" {
		t.Fatalf("Load = %+v, %v", st, err)
	}
}

// nodeagent starts the real main in a child process.
func nodeagent(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "NODEAGENT_TEST_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

// lastLine is the one-line reason main prints last on stderr.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	wrongPin := "sha256:" + strings.Repeat("0", 64)
	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, "state.json"), []byte("{oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"wrong pin", []string{"join", "--server", f.srv.URL, "--token", testToken, "--ca-pin", wrongPin, "--state-dir", t.TempDir()}, 1,
			"nodeagent: server certificate does not match --ca-pin (got " + f.pin + ", want " + wrongPin + ")"},
		{"refused token", []string{"join", "--server", f.srv.URL, "--token", "cpj_ab12cd34." + strings.Repeat("x", 32), "--ca-pin", f.pin, "--state-dir", t.TempDir()}, 1,
			"nodeagent: join refused by server: invalid or expired join token"},
		{"unreachable", []string{"join", "--server", "https://127.0.0.1:1", "--token", testToken, "--ca-pin", f.pin, "--state-dir", t.TempDir()}, 1,
			"nodeagent: enrol: cannot reach server https://127.0.0.1:1"},
		{"corrupt state", []string{"run", "--state-dir", corrupt}, 1, "nodeagent: corrupt state file"},
		{"not joined", []string{"run", "--state-dir", t.TempDir()}, 1, "nodeagent: not joined: run nodeagent join"},
		{"usage", []string{"run"}, 2, "nodeagent: run: --state-dir is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd, stderr := nodeagent(t, t.Context(), tt.args...)
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tt.code {
				t.Fatalf("exit = %v, want code %d; stderr:\n%s", err, tt.code, stderr)
			}
			if got := lastLine(stderr.String()); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("reason = %q\nwant prefix %q", got, tt.want)
			}
		})
	}
}

func TestRunCommandLifecycle(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	dir := t.TempDir()
	join, stderr := nodeagent(t, t.Context(), "join", "--token", testToken, "--ca-pin", f.pin)
	join.Env = append(join.Env, "NODEAGENT_SERVER="+f.srv.URL, "NODEAGENT_STATE_DIR="+dir)
	if err := join.Run(); err != nil {
		t.Fatalf("join: %v\n%s", err, stderr)
	}

	// SIGTERM ends a healthy run with exit 0.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd, stderr := nodeagent(t, ctx, "run", "--state-dir", dir, "--probe-listen", "127.0.0.1:0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.heartbeats.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeats; stderr:\n%s", stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run after SIGTERM: %v; stderr:\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "probe endpoint listening") {
		t.Errorf("probe endpoint not started:\n%s", stderr)
	}

	// A revoked credential ends run with exit 1 and the reason.
	f.hbStatus.Store(401)
	cmd, stderr = nodeagent(t, ctx, "run", "--state-dir", dir)
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want 1; stderr:\n%s", err, stderr)
	}
	if got, want := lastLine(stderr.String()), "nodeagent: credential rejected: node removed or credential revoked; re-join with a new token"; got != want {
		t.Fatalf("reason = %q", got)
	}
}
