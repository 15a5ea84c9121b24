// Package mailsink installs and starts the mail sink of the demo and the
// browser suite: MailDev (SMTP server and web inbox), a maintained npm
// package whose web inbox ships built, pinned by package-lock.json here
// and installed with npm ci. (mailpit built with go install has no web
// inbox: its UI is built separately with npm, and its build needs
// packages the npm registry here does not serve.)
package mailsink

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

//go:embed package.json package-lock.json
var pkg embed.FS

// Version is the MailDev version package-lock.json pins.
const Version = "3.0.0"

// Install makes sure MailDev is installed under dir (npm ci of the pinned
// lock file, once) and returns the path of its executable. It needs node
// (20 or newer) and npm.
func Install(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "node_modules", ".bin", "maildev")
	stamp := filepath.Join(dir, ".installed-"+Version)
	if _, err := os.Stat(stamp); err == nil {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", errors.New("npm not found: install Node.js 20+ and npm (Debian: apt-get install nodejs npm)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := pkg.ReadFile(name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", err
		}
	}
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci (maildev %s) in %s: %v\n%s", Version, dir, err, out)
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		return "", err
	}
	return bin, nil
}

// Args are the command-line arguments that make MailDev listen for SMTP
// on smtpAddr and serve its web inbox on webAddr (host:port each, on
// loopback), keeping mail under mailDir.
func Args(webAddr, smtpAddr, mailDir string) ([]string, error) {
	wh, wp, err := net.SplitHostPort(webAddr)
	if err != nil {
		return nil, fmt.Errorf("web address %q: %w", webAddr, err)
	}
	sh, sp, err := net.SplitHostPort(smtpAddr)
	if err != nil {
		return nil, fmt.Errorf("smtp address %q: %w", smtpAddr, err)
	}
	return []string{"--web", wp, "--web-ip", wh, "--smtp", sp, "--ip", sh, "--mail-directory", mailDir}, nil
}

// WaitReady waits until the inbox at webAddr answers its health check.
func WaitReady(ctx context.Context, webAddr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + webAddr + "/api/healthz"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the mail inbox at %s did not answer within %s (last: %v)", url, timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
