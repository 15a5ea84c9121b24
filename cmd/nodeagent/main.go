// Command nodeagent runs beside a Callplane worker server: it enrols the
// node with the call manager once (join) and then keeps it connected (run).
// See package github.com/callplane/callplane/nodes/agent for the behaviour;
// this file only turns flags and environment into a Config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/callplane/callplane/nodes/agent"
)

// version is the agent version reported to the server; release builds set
// it with -ldflags "-X main.version=...".
var version = "0.1.0"

const usage = `nodeagent — Callplane node agent

Usage:
  nodeagent join --server URL [--server URL2 ...] --token T --ca-pin sha256:HEX --state-dir DIR [--address A]
  nodeagent run --state-dir DIR [--server URL ...] [--probe-listen ADDR] [--on-assign CMD] [--log-level L]
  nodeagent version

Commands:
  join     enrol this node with a one-time join token from the portal and store
           its identity (mode 0600) in the state dir
  run      heartbeat, long-poll and ack the node's assignments until stopped
           (SIGTERM/SIGINT); with --probe-listen also serve the node kind's
           probe endpoint
  version  print the agent version

--server names a call manager; give every instance of the cluster (repeat
the flag, or separate the URLs with commas) and the agent moves to the next
one when the current one stops answering, so no virtual IP is needed. join
stores the list in the state dir; --server given to run replaces it there.

Every flag has an environment twin: NODEAGENT_SERVER, NODEAGENT_TOKEN,
NODEAGENT_CA_PIN, NODEAGENT_STATE_DIR, NODEAGENT_ADDRESS, NODEAGENT_PROBE_LISTEN,
NODEAGENT_ON_ASSIGN, NODEAGENT_LOG_LEVEL. A flag wins over its twin.

Run "nodeagent COMMAND -h" for the flags of a command.
`

// Config is everything main hands to run.
type Config struct {
	Command  string // "join", "run" or "version"
	Join     agent.JoinOptions
	Run      agent.RunOptions
	LogLevel slog.Level
	Stdout   io.Writer
	Stderr   io.Writer
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nodeagent: %s\n", oneLine(err))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "nodeagent: %s\n", oneLine(err))
		os.Exit(1)
	}
}

// run executes the configured command. It returns nil when a run ends
// because ctx ended (SIGTERM/SIGINT).
func run(ctx context.Context, cfg Config) error {
	log := slog.New(slog.NewTextHandler(cfg.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	switch cfg.Command {
	case "version":
		_, err := fmt.Fprintln(cfg.Stdout, "nodeagent", version)
		return err
	case "join":
		opts := cfg.Join
		opts.Logger = log
		st, err := agent.Join(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(cfg.Stdout, "joined as node %s (id %d, kind %s); identity saved in %s\n", st.NodeName, st.NodeID, st.Kind, opts.StateDir)
		fmt.Fprintf(cfg.Stdout, "start the agent with: nodeagent run --state-dir %s\n", opts.StateDir)
		return nil
	case "run":
		opts := cfg.Run
		opts.Logger = log
		return agent.Run(ctx, opts)
	default:
		return fmt.Errorf("unknown command %q", cfg.Command)
	}
}

// parseConfig turns the command line and the environment into a Config. It
// returns flag.ErrHelp after printing help to stdout.
func parseConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) (Config, error) {
	cfg := Config{Stdout: stdout, Stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cfg, errors.New("missing command (join, run or version)")
	}
	cfg.Command = args[0]
	fs := flag.NewFlagSet("nodeagent "+cfg.Command, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by main
	env := getenv
	stateDir := fs.String("state-dir", env("NODEAGENT_STATE_DIR"), "directory holding the node identity (env NODEAGENT_STATE_DIR)")
	logLevel := fs.String("log-level", envOr(getenv, "NODEAGENT_LOG_LEVEL", "info"), "debug, info, warn or error (env NODEAGENT_LOG_LEVEL)")
	var required []string
	var finish func()                    // copies the parsed flags into cfg
	check := func() error { return nil } // validates what finish copied
	switch cfg.Command {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return cfg, flag.ErrHelp
	case "version":
		finish = func() {}
	case "join":
		servers := serverFlag(fs, env)
		token := fs.String("token", env("NODEAGENT_TOKEN"), "one-time join token cpj_… (env NODEAGENT_TOKEN)")
		pin := fs.String("ca-pin", env("NODEAGENT_CA_PIN"), "sha256:HEX of the server's public key (env NODEAGENT_CA_PIN)")
		address := fs.String("address", env("NODEAGENT_ADDRESS"), "service address to report; empty keeps the registered one (env NODEAGENT_ADDRESS)")
		finish = func() {
			cfg.Join = agent.JoinOptions{Servers: servers.list(), Token: *token, CAPin: *pin, StateDir: *stateDir, Address: *address, Version: version}
		}
		required = []string{"server", "token", "ca-pin", "state-dir"}
	case "run":
		probeListen := fs.String("probe-listen", env("NODEAGENT_PROBE_LISTEN"), "serve the node kind's probe endpoint on ADDR (env NODEAGENT_PROBE_LISTEN)")
		onAssign := fs.String("on-assign", env("NODEAGENT_ON_ASSIGN"), "command run with /bin/sh -c on each assignment start and stop (env NODEAGENT_ON_ASSIGN)")
		servers := serverFlag(fs, env)
		hookTimeout := fs.String("hook-timeout", envOr(getenv, "NODEAGENT_HOOK_TIMEOUT", agent.DefaultHookTimeout.String()), "bound of one --on-assign run, e.g. 10s (env NODEAGENT_HOOK_TIMEOUT)")
		hookAttempts := fs.String("hook-attempts", envOr(getenv, "NODEAGENT_HOOK_ATTEMPTS", strconv.Itoa(agent.DefaultHookAttempts)), "tries of a failing start hook before the start is acked failed, 1-10 (env NODEAGENT_HOOK_ATTEMPTS)")
		hookRetry := fs.String("hook-retry", envOr(getenv, "NODEAGENT_HOOK_RETRY", agent.DefaultHookRetry.String()), "delay before the second try of a failing start hook, doubling after, e.g. 1s (env NODEAGENT_HOOK_RETRY)")
		finish = func() {
			cfg.Run = agent.RunOptions{StateDir: *stateDir, Servers: servers.list(), ProbeListen: *probeListen, OnAssign: *onAssign, Version: version}
			check = func() error {
				var err error
				if cfg.Run.HookTimeout, err = durationFlag("hook-timeout", *hookTimeout, time.Second, time.Hour); err != nil {
					return err
				}
				if cfg.Run.HookRetry, err = durationFlag("hook-retry", *hookRetry, 10*time.Millisecond, 10*time.Minute); err != nil {
					return err
				}
				n, err := strconv.Atoi(*hookAttempts)
				if err != nil || n < 1 || n > 10 {
					return fmt.Errorf("invalid --hook-attempts %q (want a whole number from 1 to 10)", *hookAttempts)
				}
				cfg.Run.HookAttempts = n
				return nil
			}
		}
		required = []string{"state-dir"}
	default:
		return cfg, fmt.Errorf("unknown command %q (want join, run or version; see nodeagent -h)", cfg.Command)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage of nodeagent %s:\n", cfg.Command)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return cfg, err
		}
		return cfg, fmt.Errorf("%s: %v (see nodeagent %s -h)", cfg.Command, err, cfg.Command)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%s: unexpected argument %q (see nodeagent %s -h)", cfg.Command, fs.Arg(0), cfg.Command)
	}
	finish()
	for _, name := range required {
		if fs.Lookup(name).Value.String() == "" {
			return cfg, fmt.Errorf("%s: --%s is required (see nodeagent %s -h)", cfg.Command, name, cfg.Command)
		}
	}
	if err := check(); err != nil {
		return cfg, fmt.Errorf("%s: %v", cfg.Command, err)
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("%s: invalid --log-level %q (want debug, info, warn or error)", cfg.Command, *logLevel)
	}
	return cfg, nil
}

// serversValue is the repeatable --server flag. Its environment twin is
// the default; the first --server on the command line replaces it.
type serversValue struct {
	vals []string
	set  bool
}

func serverFlag(fs *flag.FlagSet, env func(string) string) *serversValue {
	v := &serversValue{}
	if e := env("NODEAGENT_SERVER"); e != "" {
		v.vals = []string{e}
	}
	fs.Var(v, "server", "call manager URL https://HOST:PORT; repeat it or separate URLs with commas to name every instance (env NODEAGENT_SERVER)")
	return v
}

func (v *serversValue) String() string {
	if v == nil {
		return ""
	}
	return strings.Join(v.vals, ",")
}

func (v *serversValue) Set(s string) error {
	if !v.set {
		v.vals, v.set = nil, true
	}
	v.vals = append(v.vals, s)
	return nil
}

// list is the URLs given, nil when none.
func (v *serversValue) list() []string {
	var out []string
	for _, s := range v.vals {
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				out = append(out, u)
			}
		}
	}
	return out
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// oneLine makes an error fit the one-line reason main prints.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// durationFlag parses a duration flag and keeps it within [lo, hi], so a
// typo such as "1" (no unit) or "0s" is refused at start, not at the first
// failing hook.
func durationFlag(name, v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("invalid --%s %q (want a duration from %s to %s, e.g. %s)", name, v, lo, hi, lo)
	}
	return d, nil
}
