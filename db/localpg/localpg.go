// Package localpg runs a private Postgres server from the system's Postgres
// server binaries. "callmanager serve" uses it when no DATABASE_URL is set
// (the embedded default database under the data dir) and the test harness
// uses it for throwaway databases. The server listens only on a Unix socket
// inside its directory, so it needs no port and is reachable only locally.
package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configure a local server.
type Options struct {
	// Dir holds the cluster (Dir/pgdata) and its socket (Dir/run).
	Dir string
	// Fast turns off fsync for throwaway test clusters. Never for real data.
	Fast bool
	// Settings are extra "-c name=value" server settings.
	Settings map[string]string
	Log      *slog.Logger
}

// Server is a running local Postgres.
type Server struct {
	// shared is set when another process already runs the cluster (a
	// "callmanager node add" next to a running "serve"): it is used, not
	// owned, and Stop leaves it running.
	shared bool
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	waitMu sync.Mutex
	err    error
	log    *slog.Logger
}

// User is the database superuser the local cluster is created with.
const User = "callplane"

// FindBinaries returns the directory holding initdb and postgres: from
// PATH, or the newest /usr/lib/postgresql/*/bin.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, dir := range matches {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no Postgres server binaries found (initdb, postgres): install them with 'apt-get install -y postgresql' or set DATABASE_URL")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start initialises the cluster under opts.Dir when it does not exist yet,
// starts the server as a child process and waits until it accepts
// connections. The server stops when Stop is called or the parent dies.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	cred, err := credential(dir)
	if err != nil {
		return nil, err
	}
	pgdata := filepath.Join(dir, "pgdata")
	sock := filepath.Join(dir, "run")
	for _, d := range []string{dir, sock} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
		if err := chown(d, cred); err != nil {
			return nil, err
		}
	}
	if len(filepath.Join(sock, ".s.PGSQL.5432")) > 100 {
		return nil, fmt.Errorf("local postgres: socket path under %s is too long for a Unix socket; use a shorter --data-dir", sock)
	}
	if running := (&Server{dir: dir}); running.ping(ctx) {
		opts.Log.Info("using the local postgres another process runs", "dir", pgdata)
		running.shared, running.log = true, opts.Log
		return running, nil
	}
	if _, err := os.Stat(filepath.Join(pgdata, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		opts.Log.Info("initialising local postgres", "dir", pgdata)
		args := []string{"-D", pgdata, "-U", User, "--auth=trust", "-E", "UTF8", "--locale=C"}
		if opts.Fast {
			args = append(args, "--no-sync")
		}
		if out, err := run(ctx, cred, filepath.Join(bin, "initdb"), args...); err != nil {
			return nil, fmt.Errorf("initdb: %w: %s", err, lastLine(out))
		}
	}
	// A previous run killed hard may leave a stale pid file behind; the
	// server removes it itself when the pid is not alive.
	args := []string{"-D", pgdata, "-k", sock, "-c", "listen_addresses=", "-c", "max_connections=300",
		"-c", "shared_buffers=128MB", "-c", "unix_socket_permissions=0700"}
	if opts.Fast {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for k, v := range opts.Settings {
		args = append(args, "-c", k+"="+v)
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s := &Server{dir: dir, cmd: cmd, done: make(chan struct{}), log: opts.Log}
	go func() {
		err := cmd.Wait()
		s.waitMu.Lock()
		s.err = err
		s.waitMu.Unlock()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w (see %s)", err, filepath.Join(dir, "postgres.log"))
	}
	opts.Log.Info("local postgres started", "dir", pgdata)
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("local postgres exited during start")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		c, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			c.Close(ctx)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("local postgres did not accept connections within 60s")
}

// ping reports whether a server answers on the cluster's socket.
func (s *Server) ping(ctx context.Context) bool {
	if _, err := os.Stat(filepath.Join(s.dir, "run", ".s.PGSQL.5432")); err != nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, s.URL("postgres"))
	if err != nil {
		return false
	}
	c.Close(cctx)
	return true
}

// URL returns the connection URL of database name on this server.
func (s *Server) URL(name string) string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&sslmode=disable", User, name, filepath.Join(s.dir, "run"))
}

// EnsureDatabase creates database name when it does not exist.
func (s *Server) EnsureDatabase(ctx context.Context, name string) error {
	c, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// Stop shuts the server down (fast shutdown) and waits for it to exit.
func (s *Server) Stop() error {
	if s == nil || s.shared || s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		<-s.done
	}
	s.log.Info("local postgres stopped")
	return nil
}

// StopImmediate shuts the server down as "pg_ctl stop -m immediate" does
// (SIGQUIT: no checkpoint; the next start recovers from the WAL), as a
// crash would, and waits for it to exit. The fault tests use it.
func (s *Server) StopImmediate() error {
	if s == nil || s.shared || s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	<-s.done
	s.log.Info("local postgres stopped (immediate)")
	return nil
}

// BaseBackup makes dir a streaming replica of the running server s: it
// copies the cluster with pg_basebackup (as the postgres user when root)
// into dir/pgdata with a standby.signal and the primary's connection
// settings, so Start(Options{Dir: dir}) runs it as a hot standby that
// follows s until promoted (SELECT pg_promote()).
func BaseBackup(ctx context.Context, s *Server, dir string) error {
	bin, err := FindBinaries()
	if err != nil {
		return err
	}
	// PATH may hold links to only some of the server's programs; the
	// server's own directory has them all.
	if real, err := filepath.EvalSymlinks(filepath.Join(bin, "initdb")); err == nil {
		bin = filepath.Dir(real)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	cred, err := credential(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := chown(dir, cred); err != nil {
		return err
	}
	out, err := run(ctx, cred, filepath.Join(bin, "pg_basebackup"), "-D", filepath.Join(dir, "pgdata"),
		"-h", filepath.Join(s.dir, "run"), "-U", User, "-X", "stream", "-R", "--checkpoint=fast")
	if err != nil {
		return fmt.Errorf("pg_basebackup: %w: %s", err, lastLine(out))
	}
	return nil
}

// credential returns the identity to run Postgres as: the postgres user
// when running as root (initdb refuses root), else the current user.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root needs the 'postgres' system user to run the local database (apt-get install -y postgresql creates it)")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The postgres user must be able to reach the data dir.
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			break
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return nil, fmt.Errorf("local postgres runs as the postgres user, which cannot enter %s; choose a --data-dir outside it or set DATABASE_URL", d)
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func chown(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

func run(ctx context.Context, cred *syscall.Credential, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
