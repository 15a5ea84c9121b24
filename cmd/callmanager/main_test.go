package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/callplane/callplane/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

type cliEnv struct {
	t    *testing.T
	args []string
	// stderr is what the last command wrote there.
	stderr string
}

func newCLI(t *testing.T) *cliEnv {
	return &cliEnv{t: t, args: []string{"--database-url", dbtest.URL(t), "--data-dir", t.TempDir(), "--listen", "127.0.0.1:9443"}}
}

// run runs one command line and returns stdout and the error.
func (c *cliEnv) run(stdin string, args ...string) (string, error) {
	c.t.Helper()
	var out, errb bytes.Buffer
	// Settings flags go after the subcommand, like a user types them.
	full := append([]string{}, args...)
	full = append(full, c.args...)
	err := run(context.Background(), full, strings.NewReader(stdin), &out, &errb)
	c.stderr = errb.String()
	return out.String(), err
}

func TestNodeCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	out, err := c.run("", "node", "add", "--name", "media-1", "--kind", "media", "--address", "10.0.0.5:5060", "--capacity", "500")
	if err != nil || !strings.Contains(out, "media-1 (media) registered") {
		t.Fatalf("node add: %q %v", out, err)
	}
	// Bad input: a one-line reason naming the field; nothing written.
	for _, bad := range [][]string{
		{"--name", "media-1", "--kind", "media", "--address", "10.0.0.6:5060", "--capacity", "5"},
		{"--name", "x", "--kind", "fax", "--address", "10.0.0.6:5060", "--capacity", "5"},
		{"--name", "y", "--kind", "meeting", "--address", "not a url", "--capacity", "5"},
		{"--name", "z", "--kind", "im", "--address", "10.0.0.7:5222", "--capacity", "0"},
		{"--name", "w", "--kind", "im", "--address", "10.0.0.7:5222", "--capacity", "5", "--weight", "5000"},
		{"--name", "v", "--kind", "ivr", "--address", "sip:10.0.0.5:5060", "--capacity", "5"}, // media-1's socket
	} {
		_, err := c.run("", append([]string{"node", "add"}, bad...)...)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("node add %v: want a one-line error, got %v", bad, err)
		}
	}
	out, _ = c.run("", "node", "list")
	if strings.Count(out, "\n") != 2 || !strings.Contains(out, "media-1") || !strings.Contains(out, "pending") {
		t.Fatalf("node list after bad input:\n%s", out)
	}
	for _, action := range []string{"drain", "disable", "enable"} {
		if out, err := c.run("", "node", action, "media-1"); err != nil || !strings.Contains(out, "media-1 is now") {
			t.Fatalf("node %s: %q %v", action, out, err)
		}
	}
	if _, err := c.run("", "node", "disable", "nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown node: %v", err)
	}
	// Join token: the ready command with the pin.
	out, err = c.run("", "token", "create", "--node", "media-1", "--ttl", "30m")
	if err != nil || !regexp.MustCompile(`^nodeagent join --server https://127.0.0.1:9443 --token cpj_[a-z0-9]{8}\.[a-z0-9]{36} --ca-pin sha256:[0-9a-f]{64} --state-dir \S+\n$`).MatchString(out) {
		t.Fatalf("token create: %q %v", out, err)
	}
	// People are told how to start the agent after joining.
	if !strings.Contains(c.stderr, "nodeagent run --state-dir /var/lib/callplane-agent --probe-listen 10.0.0.5:5060") {
		t.Fatalf("token create does not show the run command:\n%s", c.stderr)
	}
	if _, err := c.run("", "token", "create", "--node", "media-1", "--ttl", "200h"); err == nil {
		t.Fatal("a token over 7 days was accepted")
	}
	out, err = c.run("", "apitoken", "create", "--name", "scripts")
	if err != nil || !regexp.MustCompile(`^cpa_[a-z0-9]{8}\.[a-z0-9]{36}\n$`).MatchString(out) {
		t.Fatalf("apitoken: %q %v", out, err)
	}
	if out, err := c.run("", "node", "remove", "media-1"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %q %v", out, err)
	}
}

func TestUserAddAndUsage(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	if out, err := c.run("correct horse battery staple\n", "user", "add", "--email", "ops@example.com", "--role", "owner"); err != nil || !strings.Contains(out, "ops@example.com added as owner") {
		t.Fatalf("user add: %q %v", out, err)
	}
	if _, err := c.run("short\n", "user", "add", "--email", "b@example.com", "--role", "admin"); err == nil || !strings.Contains(err.Error(), "12 characters") {
		t.Fatalf("weak password: %v", err)
	}
	if _, err := c.run("correct horse battery staple\n", "user", "add", "--email", "ops@example.com", "--role", "admin"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate user: %v", err)
	}
	var ue usageError
	if _, err := c.run("", "frobnicate"); !errors.As(err, &ue) {
		t.Fatalf("unknown command: %v", err)
	}
}
