// Package harness runs the real Callplane programs for multi-process
// tests: it builds the binaries once, starts each program as a child in its
// own process group with its output in a log file, signals it (SIGSTOP,
// SIGCONT, SIGKILL) and polls for conditions with generous bounds.
package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BuildBinaries builds callmanager and nodeagent from the module at root
// into dir, as a user would.
func BuildBinaries(root, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/callmanager", "./cmd/nodeagent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build the binaries: %v\n%s", err, out)
	}
	return nil
}

// Proc is a child process in its own process group, its output appended
// to a log file, stopped (SIGTERM, then SIGKILL) when the test ends.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	offset  int64 // where this process's output starts in the log file
	done    chan struct{}
	err     error
}

// Start starts bin with args; its log is logDir/name.log (appended to, so
// a restarted program keeps one log).
func Start(t testing.TB, name, logDir string, env []string, bin string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("log file for %s: %v", name, err)
	}
	defer f.Close()
	offset, _ := f.Seek(0, io.SeekEnd)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, LogPath: logPath, offset: offset, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p
}

// Stop sends SIGTERM to the process group (and SIGCONT, should it be
// stopped) and waits up to grace before SIGKILL. It reports whether the
// process ended on SIGTERM.
func (p *Proc) Stop(grace time.Duration) bool {
	if p.Exited() {
		return true
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGCONT)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
	}
	p.Kill()
	return false
}

// Kill ends the process group at once, as a crash would (kill -9).
func (p *Proc) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Signal sends sig to the process group (SIGSTOP pauses it, SIGCONT lets
// it go on).
func (p *Proc) Signal(sig syscall.Signal) error { return syscall.Kill(-p.Cmd.Process.Pid, sig) }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil while it runs).
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Log returns everything this process wrote (not what an earlier process
// of the same name wrote to the log file).
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	if int64(len(b)) < p.offset {
		return ""
	}
	return string(b[p.offset:])
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitLog polls the log until re matches, for at most timeout, and returns
// the match.
func (p *Proc) WaitLog(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	var m []string
	Poll(t, timeout, fmt.Sprintf("%s to log %s", p.Name, re), func() (bool, string) {
		if m = re.FindStringSubmatch(p.Log()); m != nil {
			return true, ""
		}
		if p.Exited() {
			t.Fatalf("%s exited (%v) before its log matched %s:\n%s", p.Name, p.err, re, p.Tail(40))
		}
		return false, p.Tail(5)
	})
	return m
}

// Poll calls cond every 200ms until it is true, failing the test after
// timeout with the last state cond described.
func Poll(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if !Within(timeout, cond) {
		_, last := cond()
		t.Fatalf("waited %v for %s; last: %s", timeout, what, last)
	}
}

// Within polls cond every 200ms for at most timeout and reports whether it
// became true.
func Within(timeout time.Duration, cond func() (bool, string)) bool {
	deadline := time.Now().Add(timeout)
	for {
		if ok, _ := cond(); ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// FreeTCP returns a loopback address whose TCP port was free a moment ago.
func FreeTCP(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// FreeSIP returns a loopback address free for both UDP and TCP, as a SIP
// endpoint listens on both.
func FreeSIP(t testing.TB) string {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free udp port: %v", err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return ""
}

// WriteCert creates a self-signed certificate for 127.0.0.1 that every
// instance of a cluster serves (--tls-cert/--tls-key), so one CA pin holds
// for all of them.
func WriteCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "callplane test cluster"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cluster.crt"), filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
