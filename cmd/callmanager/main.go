// Command callmanager runs a Callplane call manager instance and its
// administration commands. main only parses flags and the environment
// into a config and calls run.
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

	"github.com/callplane/callplane/server"
)

var version = "dev"

const usage = `callmanager — the Callplane call manager

Usage:
  callmanager serve                      run an instance (portal, agent API, health checker)
  callmanager migrate                    apply pending migrations and exit
  callmanager user add --email E --role owner|admin|viewer   (password on stdin)
  callmanager node add --name N --kind K --address A --capacity C [--weight W] [--region R] [--description D]
  callmanager node list
  callmanager node enable|drain|disable N
  callmanager node remove N [--move-work]
  callmanager token create --node N [--ttl 1h]
  callmanager node edit N [--address A] [--capacity C] [--weight W] [--region R] [--description D] [--yes]
  callmanager node preview N --action disable|drain|remove|capacity [--capacity C]
  callmanager apitoken create --name N [--scope read|admin] [--ttl D]
  callmanager maintenance add N --end T [--start T] --reason R   (T: RFC 3339 or a duration from now, e.g. 2h)
  callmanager maintenance list [N] [--all]
  callmanager maintenance cancel ID
  callmanager alerts list [--node N] [--state pending|sent|failed] [--limit L]
  callmanager alerts ack ID --note TEXT
  callmanager version

Settings (flag, environment twin):
  --database-url   DATABASE_URL         unset: a local Postgres under the data dir
  --data-dir       CALLPLANE_DATA_DIR   .data
  --listen         CALLPLANE_LISTEN     127.0.0.1:8443
  --tls-cert       CALLPLANE_TLS_CERT   self-signed, kept in the data dir
  --tls-key        CALLPLANE_TLS_KEY
  --smtp-url       CALLPLANE_SMTP_URL   e.g. smtp://user:pass@host:587
  --alert-from     CALLPLANE_ALERT_FROM
  --alert-to       CALLPLANE_ALERT_TO   comma-separated
  --public-url     CALLPLANE_PUBLIC_URL how people and agents reach this instance
  --instance-id    CALLPLANE_INSTANCE_ID
  --log-level      CALLPLANE_LOG_LEVEL  debug|info|warn|error
  --trusted-proxies CALLPLANE_TRUSTED_PROXIES  CIDRs whose X-Forwarded-For is believed; unset: none
  --max-conns-per-client CALLPLANE_MAX_CONNS_PER_CLIENT  256; 0: no cap
  --sip-listen     CALLPLANE_SIP_LISTEN 127.0.0.1:5060 (SIP front door, UDP and TCP; empty: off)
  --sip-public     CALLPLANE_SIP_PUBLIC host:port written into Record-Route (default: the listen address)
  --metrics-listen CALLPLANE_METRICS_LISTEN  unset; e.g. 127.0.0.1:9464 serves /metrics without a token
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var ue usageError
		fmt.Fprintln(os.Stderr, "callmanager: "+strings.TrimSpace(firstLine(err.Error())))
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// settings binds the shared settings to a flag set, with environment
// twins as defaults.
func settings(fs *flag.FlagSet, cfg *server.Config, logLevel *string) {
	env := func(name, def string) string {
		if v, ok := os.LookupEnv(name); ok {
			return v
		}
		return def
	}
	fs.StringVar(&cfg.DatabaseURL, "database-url", env("DATABASE_URL", ""), "Postgres URL; unset: a local Postgres under the data dir")
	fs.StringVar(&cfg.DataDir, "data-dir", env("CALLPLANE_DATA_DIR", ".data"), "data directory")
	fs.StringVar(&cfg.Listen, "listen", env("CALLPLANE_LISTEN", "127.0.0.1:8443"), "HTTPS listen address")
	fs.StringVar(&cfg.TLSCert, "tls-cert", env("CALLPLANE_TLS_CERT", ""), "TLS certificate file")
	fs.StringVar(&cfg.TLSKey, "tls-key", env("CALLPLANE_TLS_KEY", ""), "TLS key file")
	fs.StringVar(&cfg.SMTPURL, "smtp-url", env("CALLPLANE_SMTP_URL", ""), "SMTP server URL for alerts")
	fs.StringVar(&cfg.AlertFrom, "alert-from", env("CALLPLANE_ALERT_FROM", ""), "alert sender address")
	fs.StringVar(&cfg.AlertTo, "alert-to", env("CALLPLANE_ALERT_TO", ""), "comma-separated alert recipients")
	fs.StringVar(&cfg.PublicURL, "public-url", env("CALLPLANE_PUBLIC_URL", ""), "URL people and agents use to reach this instance")
	fs.StringVar(&cfg.InstanceID, "instance-id", env("CALLPLANE_INSTANCE_ID", ""), "name of this instance (default host-pid)")
	fs.StringVar(&cfg.SIPListen, "sip-listen", env("CALLPLANE_SIP_LISTEN", "127.0.0.1:5060"), "SIP front door address, UDP and TCP (empty: off)")
	fs.StringVar(&cfg.SIPPublic, "sip-public", env("CALLPLANE_SIP_PUBLIC", ""), "host:port written into Record-Route (default: the listen address)")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", env("CALLPLANE_METRICS_LISTEN", ""), "address serving /metrics over plain HTTP without a token (unset: off)")
	fs.StringVar(logLevel, "log-level", env("CALLPLANE_LOG_LEVEL", "info"), "debug|info|warn|error")
}

// edgeSettings binds the settings of the HTTP edge: which peers may name
// the client in X-Forwarded-For, and how many connections one client
// address may hold open. A bad value in the environment is an error.
func edgeSettings(fs *flag.FlagSet, cfg *server.Config) error {
	fs.Func("trusted-proxies", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed", func(v string) error {
		p, err := server.ParseTrustedProxies(v)
		cfg.TrustedProxies = p
		return err
	})
	fs.Func("max-conns-per-client", "open connections one client address may hold (default 256); 0: no cap", func(v string) error {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 0:
			return errors.New("max-conns-per-client must be a whole number, 0 for no cap")
		case n == 0:
			n = -1
		}
		cfg.MaxConnsPerClient = n
		return nil
	})
	for flagName, envName := range map[string]string{"trusted-proxies": "CALLPLANE_TRUSTED_PROXIES", "max-conns-per-client": "CALLPLANE_MAX_CONNS_PER_CLIENT"} {
		if v, ok := os.LookupEnv(envName); ok {
			if err := fs.Set(flagName, v); err != nil {
				return fmt.Errorf("%s: %w", envName, err)
			}
		}
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{"--log-level must be debug, info, warn or error"}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// run dispatches a command line; tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return usageError{"no command given"}
		}
		return nil
	}
	cmd, rest := args[0], args[1:]
	sub := ""
	if (cmd == "user" || cmd == "node" || cmd == "token" || cmd == "apitoken" || cmd == "maintenance" || cmd == "alerts") && len(rest) > 0 {
		sub, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("callmanager "+strings.TrimSpace(cmd+" "+sub), flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg server.Config
	var logLevel string
	settings(fs, &cfg, &logLevel)
	if err := edgeSettings(fs, &cfg); err != nil {
		return usageError{err.Error()}
	}
	cfg.Version = version
	c := &cli{ctx: ctx, fs: fs, cfg: &cfg, stdin: stdin, stdout: stdout, stderr: stderr, logLevel: &logLevel}
	switch cmd {
	case "serve":
		return c.serve(rest)
	case "migrate":
		return c.migrate(rest)
	case "version":
		fmt.Fprintln(stdout, "callmanager", version)
		return nil
	case "user":
		if sub == "add" {
			return c.userAdd(rest)
		}
	case "node":
		switch sub {
		case "add":
			return c.nodeAdd(rest)
		case "list":
			return c.nodeList(rest)
		case "enable", "drain", "disable":
			return c.nodeState(sub, rest)
		case "remove":
			return c.nodeRemove(rest)
		case "edit":
			return c.nodeEdit(rest)
		case "preview":
			return c.nodePreview(rest)
		}
	case "maintenance":
		switch sub {
		case "add":
			return c.maintenanceAdd(rest)
		case "list":
			return c.maintenanceList(rest)
		case "cancel":
			return c.maintenanceCancel(rest)
		}
	case "alerts":
		switch sub {
		case "list":
			return c.alertsList(rest)
		case "ack":
			return c.alertsAck(rest)
		}
	case "token":
		if sub == "create" {
			return c.tokenCreate(rest)
		}
	case "apitoken":
		if sub == "create" {
			return c.apiTokenCreate(rest)
		}
	}
	return usageError{fmt.Sprintf("unknown command %q; run 'callmanager help'", strings.TrimSpace(cmd+" "+sub))}
}

type cli struct {
	ctx            context.Context
	fs             *flag.FlagSet
	cfg            *server.Config
	stdin          io.Reader
	stdout, stderr io.Writer
	logLevel       *string
}

func (c *cli) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}

func (c *cli) serve(args []string) error {
	if err := c.parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usageError{"serve takes no arguments"}
	}
	log, err := newLogger(c.stderr, *c.logLevel)
	if err != nil {
		return err
	}
	s, err := server.New(c.ctx, *c.cfg, log)
	if err != nil {
		return err
	}
	return s.Run(c.ctx)
}

func (c *cli) migrate(args []string) error {
	if err := c.parse(args); err != nil {
		return err
	}
	log, err := newLogger(c.stderr, *c.logLevel)
	if err != nil {
		return err
	}
	pool, _, pg, err := server.OpenDatabase(c.ctx, c.cfg.WithDefaults(), log)
	if err != nil {
		return err
	}
	pool.Close()
	if pg != nil {
		pg.Stop()
	}
	fmt.Fprintln(c.stdout, "migrations applied")
	return nil
}

// withDB opens the database quietly for an administrative command.
func (c *cli) withDB(fn func(env *server.Admin) error) error {
	log, err := newLogger(io.Discard, "error")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Minute)
	defer cancel()
	env, err := server.OpenAdmin(ctx, *c.cfg, log)
	if err != nil {
		return err
	}
	defer env.Close()
	return fn(env)
}
