package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The node page shows the full command that starts the node's agent,
// --probe-listen on the node's service socket included.
func TestNodePageShowsRunCommand(t *testing.T) {
	t.Parallel()
	in := start(t)
	in.AddNode(t, "meet-1", "meeting", "https://10.0.0.9/probe", 10)
	admin := in.User(t, "admin@example.com", "admin")
	page := in.Get(t, admin, "/nodes/meet-1")
	if !strings.Contains(page.Body, "nodeagent run --state-dir") || !strings.Contains(page.Body, "--probe-listen 10.0.0.9:443") {
		t.Fatalf("node page run command missing or wrong:\n%s", page.Body)
	}
	// A node that is not held cannot have its hold cleared: 422, audited.
	r := in.PostForm(t, admin, "/nodes/meet-1/hold/clear", url.Values{})
	if r.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "not held") {
		t.Fatalf("clear hold of a node not held: %d", r.StatusCode)
	}
	if n := auditCount(t, in, "node.hold.clear", "error"); n != 1 {
		t.Fatalf("refused clear audited %d times", n)
	}
}
