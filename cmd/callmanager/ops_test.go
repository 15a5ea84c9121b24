package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestOperationsCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	if _, err := c.run("", "node", "add", "--name", "media-1", "--kind", "media", "--address", "10.0.0.5:5060", "--capacity", "500"); err != nil {
		t.Fatal(err)
	}
	out, err := c.run("", "node", "edit", "media-1", "--capacity", "300", "--weight", "50")
	if err != nil || !strings.Contains(out, "capacity 300, weight 50") || !strings.Contains(out, "10.0.0.5:5060") {
		t.Fatalf("node edit: %q %v", out, err)
	}
	if _, err := c.run("", "node", "edit", "media-1", "--capacity", "zero"); err == nil || !strings.Contains(err.Error(), "capacity") {
		t.Fatalf("node edit with a bad capacity: %v", err)
	}
	out, err = c.run("", "node", "preview", "media-1", "--action", "disable")
	if err != nil || !strings.Contains(out, "unplaced: 0 items") || !strings.Contains(out, "stays: 0 items") {
		t.Fatalf("node preview: %q %v", out, err)
	}
	if _, err := c.run("", "node", "preview", "media-1", "--action", "explode"); err == nil {
		t.Fatal("node preview with a bad action succeeded")
	}

	out, err = c.run("", "maintenance", "add", "media-1", "--end", "2h", "--reason", "kernel upgrade")
	if err != nil || !strings.Contains(out, "maintenance window") {
		t.Fatalf("maintenance add: %q %v", out, err)
	}
	id := regexp.MustCompile(`window (\d+)`).FindStringSubmatch(out)[1]
	if _, err := c.run("", "maintenance", "add", "media-1", "--start", "3h", "--end", "4h", "--reason", "disk swap"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.run("", "maintenance", "add", "media-1", "--end", "2h"); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("maintenance without a reason: %v", err)
	}
	if _, err := c.run("", "maintenance", "add", "media-1", "--end", "next week", "--reason", "x"); err == nil || !strings.Contains(err.Error(), "--end") {
		t.Fatalf("maintenance with a bad end: %v", err)
	}
	out, err = c.run("", "maintenance", "list", "media-1")
	if err != nil || !strings.Contains(out, "active") || !strings.Contains(out, "scheduled") || strings.Count(out, "\n") != 3 {
		t.Fatalf("maintenance list:\n%s %v", out, err)
	}
	if out, err = c.run("", "maintenance", "cancel", id); err != nil || !strings.Contains(out, "cancelled") {
		t.Fatalf("maintenance cancel: %q %v", out, err)
	}
	if _, err = c.run("", "maintenance", "cancel", id); err == nil {
		t.Fatal("cancelling twice succeeded")
	}
	out, _ = c.run("", "maintenance", "list")
	if strings.Contains(out, "kernel upgrade") || !strings.Contains(out, "disk swap") {
		t.Fatalf("maintenance list after cancel:\n%s", out)
	}

	out, err = c.run("", "apitoken", "create", "--name", "grafana", "--scope", "read", "--ttl", "720h")
	if err != nil || !strings.HasPrefix(out, "cpa_") {
		t.Fatalf("apitoken create: %q %v", out, err)
	}
	if _, err := c.run("", "apitoken", "create", "--name", "x", "--scope", "root"); err == nil || !strings.Contains(err.Error(), "scope") {
		t.Fatalf("apitoken with a bad scope: %v", err)
	}
	out, err = c.run("", "alerts", "list")
	if err != nil || !strings.HasPrefix(out, "ID") {
		t.Fatalf("alerts list: %q %v", out, err)
	}
	if _, err := c.run("", "alerts", "ack", "999", "--note", "on it"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("ack of a missing alert: %v", err)
	}
}
