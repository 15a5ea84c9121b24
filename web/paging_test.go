package web_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/callplane/callplane/server/servertest"
)

func TestNodeListPages(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	for i := 0; i < 120; i++ {
		in.AddNode(t, fmt.Sprintf("im-%03d", i), "im", fmt.Sprintf("10.0.%d.%d:5222", i/200, i%200+1), 10)
	}
	c := in.User(t, "viewer@example.com", "viewer")
	r := in.Get(t, c, "/nodes")
	if got := strings.Count(r.Body, `data-testid="node-row-`); got != 100 {
		t.Fatalf("first page rows: %d", got)
	}
	if n, _ := servertest.TestID(r.Body, "nodes-count"); !strings.Contains(n, "1–100 of 120 nodes") {
		t.Fatalf("count: %q", n)
	}
	if !strings.Contains(r.Body, `data-testid="nodes-next"`) {
		t.Fatal("no next link")
	}
	// The live refresh of page 2 stays on page 2.
	r = in.HTMX(t, c, "GET", "/nodes?page=2", nil)
	if got := strings.Count(r.Body, `data-testid="node-row-`); got != 20 || !strings.Contains(r.Body, `hx-get="/nodes?page=2"`) {
		t.Fatalf("second page: %d rows", got)
	}
	if strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, "node-row-im-119") {
		t.Fatal("second page partial is wrong")
	}
	// Rendered whole before it is sent: one write, with its length.
	if r.ContentLength != int64(len(r.Body)) {
		t.Fatalf("partial sent with length %d, body %d bytes", r.ContentLength, len(r.Body))
	}
	// A page past the last shows the last (only a page's rows are read).
	r = in.HTMX(t, c, "GET", "/nodes?page=9", nil)
	if n, _ := servertest.TestID(r.Body, "nodes-count"); strings.Count(r.Body, `data-testid="node-row-`) != 20 || !strings.Contains(n, "101–120 of 120 nodes") {
		t.Fatalf("page past the last: %q, %d rows", n, strings.Count(r.Body, `data-testid="node-row-`))
	}
	// A filter narrows the count.
	r = in.Get(t, c, "/nodes?q=im-00")
	if n, _ := servertest.TestID(r.Body, "nodes-count"); !strings.Contains(n, "of 10 nodes") {
		t.Fatalf("filtered count: %q", n)
	}
	r = in.Get(t, c, "/nodes?q=nothing-matches&page=3")
	if r.StatusCode != 200 || strings.Count(r.Body, `data-testid="node-row-`) != 0 {
		t.Fatalf("a filter that matches nothing: %d, %d rows", r.StatusCode, strings.Count(r.Body, `data-testid="node-row-`))
	}
}
