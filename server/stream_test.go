package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/metrics"
	"github.com/callplane/callplane/server/servertest"
)

// streamLines opens a streamed long-poll and sends each line's desired set
// on the returned channel, closed when the stream ends; the content type
// of the answer comes first on ct.
func streamLines(t *testing.T, in *servertest.Instance, path, cred string, timeout time.Duration) (<-chan map[string]any, <-chan string) {
	t.Helper()
	return streamLinesWith(t, in, "GET", path, cred, nil, timeout)
}

// streamLinesWith is streamLines with a method and a request body (a POST
// stream's acks).
func streamLinesWith(t *testing.T, in *servertest.Instance, method, path, cred string, body io.Reader, timeout time.Duration) (<-chan map[string]any, <-chan string) {
	t.Helper()
	lines := make(chan map[string]any, 16)
	ct := make(chan string, 1)
	// Not api(): its client gives up after 30 s, and a test goroutine
	// must not call t.Fatal.
	c := in.Client(t)
	c.Timeout = timeout
	url := in.URL + path
	go func() {
		defer close(lines)
		req, _ := http.NewRequest(method, url, body)
		req.Header.Set("Authorization", "Bearer "+cred)
		if body != nil {
			req.Header.Set("Content-Type", "application/x-ndjson")
		}
		resp, err := c.Do(req)
		if err != nil {
			ct <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		ct <- fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"bad line": sc.Text()}
			}
			lines <- m
		}
	}()
	return lines, ct
}

func nextLine(t *testing.T, lines <-chan map[string]any, within time.Duration, what string) map[string]any {
	t.Helper()
	select {
	case m, ok := <-lines:
		if !ok {
			t.Fatalf("%s: the stream ended", what)
		}
		return m
	case <-time.After(within):
		t.Fatalf("%s: no line within %s", what, within)
	}
	return nil
}

// openPostStream opens a POST stream from version 0, open at most wait,
// and returns its lines and its body (ended when the test ends).
func openPostStream(t *testing.T, in *servertest.Instance, cred string, wait time.Duration) (<-chan map[string]any, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	lines, ct := streamLinesWith(t, in, "POST", fmt.Sprintf("/api/v1/assignments?since=0&wait=%s&delta=1&stream=1", wait), cred, pr, 2*wait)
	if got := <-ct; got != "200 application/x-ndjson" {
		t.Fatalf("POST stream answer: %s", got)
	}
	return lines, pw
}

// streamEnds fails unless the stream ends, with no further line, within
// the given time.
func streamEnds(t *testing.T, lines <-chan map[string]any, within time.Duration, what string) {
	t.Helper()
	select {
	case m, ok := <-lines:
		if ok {
			t.Fatalf("the stream went on (%s): %v", what, m)
		}
	case <-time.After(within):
		t.Fatalf("the stream did not end (%s) within %s", what, within)
	}
}

func refs(m map[string]any) []string {
	var out []string
	as, _ := m["assignments"].([]any)
	for _, x := range as {
		out = append(out, x.(map[string]any)["ref"].(string))
	}
	return out
}

// A streamed long-poll answers every change on one request, a line each:
// the whole set first, then deltas, each as soon as the change is
// notified. The stream ends at its wait.
func TestStreamDeliversEveryChangeOnOneRequest(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	place(t, in, "call", "s0", 1)
	// Only the notification can bring a line before the stream's wait
	// ends it, so each line is asked for within half that wait: a bound
	// no busy machine comes near and a missing notification cannot meet.
	const wait = 60 * time.Second
	lines, ct := streamLines(t, in, fmt.Sprintf("/api/v1/assignments?since=0&wait=%s&delta=1&stream=1", wait), cred, 2*wait)
	if got := <-ct; got != "200 application/x-ndjson" {
		t.Fatalf("stream answer: %s", got)
	}
	first := nextLine(t, lines, wait/2, "the whole set")
	if first["delta"] == true || strings.Join(refs(first), ",") != "s0" {
		t.Fatalf("first line = %v, want the whole set with s0", first)
	}
	v := first["version"].(float64)
	for _, ref := range []string{"s1", "s2"} {
		place(t, in, "call", ref, 1)
		m := nextLine(t, lines, wait/2, ref)
		if m["delta"] != true || strings.Join(refs(m), ",") != ref || m["version"].(float64) <= v {
			t.Fatalf("line after placing %s = %v, want a delta with it alone after version %v", ref, m, v)
		}
		v = m["version"].(float64)
	}

	// Nothing new: a stream that ends at its wait, without a line.
	short, ct := streamLines(t, in, fmt.Sprintf("/api/v1/assignments?since=%d&wait=1s&delta=1&stream=1", int64(v)), cred, 2*wait)
	if got := <-ct; !strings.HasPrefix(got, "200 ") {
		t.Fatalf("short stream: %s", got)
	}
	streamEnds(t, short, wait/2, "with nothing new, at its wait of 1s")

	// Its parameter is a boolean.
	if r, _ := api(t, in, "GET", "/api/v1/assignments?since=0&stream=yes", cred, nil); r.StatusCode != 400 || !strings.Contains(string(r.Body), "stream") {
		t.Fatalf("stream=yes: %d %s", r.StatusCode, r.Body)
	}
}

// An agent that streams acks on its heartbeats: they are recorded as the
// batch ack records them and their results come in the answer; bad acks
// are refused with the field named and change nothing; a disabled node's
// are refused one by one (403), its beat still counted.
func TestHeartbeatCarriesAcks(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	acks, _ := placeForAcks(t, in, cred, "h", 2)
	beat := func(acks any) (*http.Response, map[string]any, string) {
		r, m := api(t, in, "POST", "/api/v1/heartbeat", cred, map[string]any{"load": 2, "version": "t", "acks": acks})
		return &http.Response{StatusCode: r.StatusCode}, m, string(r.Body)
	}
	stale := map[string]any{"id": acks[0]["id"], "epoch": 99, "state": "active"}
	r, m, body := beat(acks)
	results, _ := m["acks"].([]any)
	if r.StatusCode != 200 || len(results) != 2 || results[0].(map[string]any)["ok"] != true || results[1].(map[string]any)["ok"] != true {
		t.Fatalf("heartbeat with acks: %d %s, want two ok", r.StatusCode, body)
	}
	r, m, body = beat([]any{stale})
	if results, _ := m["acks"].([]any); r.StatusCode != 200 || len(results) != 1 || results[0].(map[string]any)["status"] != float64(409) {
		t.Fatalf("a stale epoch: %d %s, want its result 409", r.StatusCode, body)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after the heartbeat carried their acks, want 2", n)
	}

	place(t, in, "call", "h2", 1)
	if _, _, body := beat([]any{map[string]any{"id": 1, "epoch": 1, "state": "running"}}); !strings.Contains(body, "state must be") {
		t.Fatalf("a bad ack state: %s", body)
	}
	if r, _, body := beat(`x`); r.StatusCode != 400 || !strings.Contains(body, "acks") {
		t.Fatalf("acks of the wrong type: %d %s", r.StatusCode, body)
	}
	many := make([]map[string]any, 1001)
	for i := range many {
		many[i] = map[string]any{"id": i + 1, "epoch": 1, "state": "active"}
	}
	if r, _, body := beat(many); r.StatusCode != 400 || !strings.Contains(body, "acks") {
		t.Fatalf("too many acks: %d %s", r.StatusCode, body)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after refused acks, want 2", n)
	}

	// A disabled node: its acks are refused, its heartbeat still counts.
	if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", "disabled"); err != nil {
		t.Fatal(err)
	}
	unknown := []any{map[string]any{"id": 999999, "epoch": 1, "state": "active"}} // 404 while enabled
	waitFor(t, "a disabled node's ack to be refused (403)", func() bool {
		r, m, _ := beat(unknown)
		results, _ := m["acks"].([]any)
		return r.StatusCode == 200 && len(results) == 1 && results[0].(map[string]any)["status"] == float64(403)
	})
}

// placeForAcks places n calls (prefix0, prefix1, ...) on the agent's node
// and returns the acks that make them active, from the node's whole set,
// and that set's version.
func placeForAcks(t *testing.T, in *servertest.Instance, cred, prefix string, n int) ([]map[string]any, int64) {
	t.Helper()
	for i := range n {
		place(t, in, "call", fmt.Sprintf("%s%d", prefix, i), 1)
	}
	_, set := api(t, in, "GET", "/api/v1/assignments?since=0&wait=0s", cred, nil)
	var acks []map[string]any
	for _, x := range set["assignments"].([]any) {
		a := x.(map[string]any)
		acks = append(acks, map[string]any{"id": a["id"], "epoch": a["epoch"], "state": "active"})
	}
	return acks, int64(set["version"].(float64))
}

// A POST stream carries the acks both ways on the one request: each line
// the agent writes is recorded as the batch ack records it, and its
// results come back as a line of their own while deliveries go on. A bad
// batch is refused ack by ack with the field named and writes nothing; a
// line that is not JSON ends the stream with an error line naming it.
func TestPostStreamCarriesAcksBothWays(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	acks, version := placeForAcks(t, in, cred, "d", 2)
	const wait = 60 * time.Second
	lines, pw := openPostStream(t, in, cred, wait)
	if first := nextLine(t, lines, wait/2, "the whole set"); len(refs(first)) != 2 {
		t.Fatalf("first line = %v, want the whole set of two", first)
	}
	send := func(line string) {
		t.Helper()
		if _, err := io.WriteString(pw, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	results := func(m map[string]any) []float64 {
		t.Helper()
		if m["version"] != float64(version) || m["delta"] != true || len(refs(m)) != 0 {
			t.Fatalf("a line of results = %v, want no change at version %d", m, version)
		}
		var out []float64
		for _, x := range m["acks"].([]any) {
			r := x.(map[string]any)
			if r["ok"] == true {
				out = append(out, 200)
			} else {
				out = append(out, r["status"].(float64))
			}
		}
		return out
	}
	b, _ := json.Marshal(map[string]any{"acks": acks})
	send(string(b))
	// Only the ack line brings a line before the wait: nothing else changes.
	if got := results(nextLine(t, lines, wait/2, "the acks' results")); fmt.Sprint(got) != "[200 200]" {
		t.Fatalf("results %v, want two ok", got)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after the stream carried their acks, want 2", n)
	}
	b, _ = json.Marshal(map[string]any{"acks": []any{map[string]any{"id": acks[0]["id"], "epoch": 99, "state": "active"}}})
	send(string(b))
	if got := results(nextLine(t, lines, wait/2, "a stale ack's result")); fmt.Sprint(got) != "[409]" {
		t.Fatalf("a stale epoch: results %v, want [409]", got)
	}

	// Deliveries go on between the results.
	place(t, in, "call", "d2", 1)
	m := nextLine(t, lines, wait/2, "the delivery of d2")
	if strings.Join(refs(m), ",") != "d2" {
		t.Fatalf("line after placing d2 = %v, want a delta with it", m)
	}
	version = int64(m["version"].(float64))
	d2 := m["assignments"].([]any)[0].(map[string]any)

	many := make([]map[string]any, 1001)
	for i := range many {
		many[i] = map[string]any{"id": d2["id"], "epoch": d2["epoch"], "state": "active"}
	}
	b, _ = json.Marshal(map[string]any{"acks": many})
	send(string(b))
	m = nextLine(t, lines, wait/2, "too many acks' results")
	if got := results(m); len(got) != 1001 || got[0] != 400 || !strings.Contains(fmt.Sprint(m["acks"]), "acks") {
		t.Fatalf("1,001 acks: %v, want each refused 400 naming acks", m["acks"])
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after a refused batch, want 2", n)
	}

	send(`{"acks": [{"id": 1, "epoch": 1, "state": "active"`)
	send(`}`) // the object is over: the next line is not JSON
	send(`not json`)
	m = nextLine(t, lines, wait/2, "the error line")
	if e, _ := m["error"].(string); !strings.Contains(e, "acks: line") {
		t.Fatalf("a line that is not JSON: %v, want an error naming the acks line", m)
	}
	streamEnds(t, lines, wait/2, "after its error line")

	// A line over the limit, or with a NUL byte, is named and ends its stream.
	for name, line := range map[string]string{
		"too long": `{"acks": [` + strings.Repeat(`{"id": 1, "epoch": 1, "state": "active"},`, 30000),
		"NUL":      "{\"acks\": [{\"id\": 1, \"epoch\": 1, \"state\": \"act\x00ive\"}]}",
	} {
		pr, pw := io.Pipe()
		lines, ct := streamLinesWith(t, in, "POST", "/api/v1/assignments?since=0&wait=60s&delta=1&stream=1", cred, pr, 2*wait)
		if got := <-ct; got != "200 application/x-ndjson" {
			t.Fatalf("%s: %s", name, got)
		}
		nextLine(t, lines, wait/2, name+": the whole set")
		go func() { _, _ = io.WriteString(pw, line+"\n") }()
		m := nextLine(t, lines, wait/2, name+": the error line")
		if e, _ := m["error"].(string); !strings.Contains(e, "acks: line 1") {
			t.Fatalf("%s: %v, want an error naming the acks line", name, m)
		}
		pw.Close()
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 2 {
		t.Fatalf("%d items active after refused lines, want 2", n)
	}

	// The body of a POST stream is newline-delimited JSON.
	req, _ := http.NewRequest("POST", in.URL+"/api/v1/assignments?since=0&stream=1", strings.NewReader("x"))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "Bearer "+cred)
	if r := in.Do(t, in.Client(t), req); r.StatusCode != 415 || !strings.Contains(r.Body, "Content-Type") {
		t.Fatalf("POST stream of text/plain: %d %s", r.StatusCode, r.Body)
	}
}

// The results of a line of acks are held for a send going anyway (a
// delivery, a beat's answer), agentproto.AckHold at most: alone on the
// stream they come no sooner than that, and a delivery meanwhile takes
// them along, ahead of it.
func TestPostStreamHoldsAckResultsForTheNextSend(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	acks, _ := placeForAcks(t, in, cred, "h", 2)
	const wait = 60 * time.Second
	lines, pw := openPostStream(t, in, cred, wait)
	nextLine(t, lines, wait/2, "the whole set")
	ackLine := func(a map[string]any) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"acks": []any{a}})
		if _, err := io.WriteString(pw, string(b)+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	sent := time.Now()
	ackLine(acks[0])
	m := nextLine(t, lines, wait/2, "the first ack's result")
	if took := time.Since(sent); took < agentproto.AckHold {
		t.Fatalf("the result came %s after its ack, want it held %s for a send going anyway", took, agentproto.AckHold)
	}
	if fmt.Sprint(m["acks"]) != fmt.Sprintf("[map[id:%v ok:true]]", acks[0]["id"]) {
		t.Fatalf("results line = %v, want the first ack ok", m)
	}
	// The ack is recorded before its result is written: once it is active
	// the result waits in the stream, and the delivery placed next takes it.
	ackLine(acks[1])
	for deadline := time.Now().Add(wait / 2); count(t, in, "SELECT count(*) FROM work WHERE state = 'active'") != 2; {
		if time.Now().After(deadline) {
			t.Fatal("the second ack was not recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	place(t, in, "call", "h-next", 1)
	m = nextLine(t, lines, wait/2, "the second ack's result")
	if fmt.Sprint(m["acks"]) != fmt.Sprintf("[map[id:%v ok:true]]", acks[1]["id"]) {
		t.Fatalf("line after the second ack = %v, want its result", m)
	}
	if m = nextLine(t, lines, wait/2, "the delivery"); strings.Join(refs(m), ",") != "h-next" {
		t.Fatalf("line after the result = %v, want the delivery of h-next", m)
	}
}

// When a POST stream's wait is over, the call manager says end; the agent
// ends its body, the answer ends cleanly and the connection serves the
// agent's next request. An agent that keeps its body open past that has
// its connection closed.
func TestPostStreamEndsWithTheAgentsBody(t *testing.T) {
	t.Parallel()
	// Bodies may take ten minutes to arrive here: an answer that waited
	// for a body's end would not come within a client's 30 s.
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes,
		Configure: func(c *server.Config) { c.BodyTimeout = 10 * time.Minute }})
	in.AddNode(t, "m1", "media", "127.0.0.1:5060", 100)
	exec(t, in, "UPDATE nodes SET health = 'up', enrolled_at = coalesce(enrolled_at, now())")
	cred := enrol(t, in, "m1")
	placeForAcks(t, in, cred, "e", 1)
	c := in.Client(t)
	c.Timeout = 2 * time.Minute
	open := func() (*json.Decoder, *io.PipeWriter, func()) {
		t.Helper()
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", in.URL+"/api/v1/assignments?since=0&wait=1s&delta=1&stream=1", pr)
		req.ContentLength = -1
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST stream: %v %v", resp, err)
		}
		return json.NewDecoder(resp.Body), pw, func() { resp.Body.Close(); pw.Close() }
	}
	untilEnd := func(dec *json.Decoder) {
		t.Helper()
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("the stream ended without saying end: %v", err)
			}
			if m["end"] == true {
				return
			}
		}
	}

	dec, pw, done := open()
	untilEnd(dec)
	pw.Close()
	var m map[string]any
	if err := dec.Decode(&m); err != io.EOF {
		t.Fatalf("after the agent ended its body: %v %v, want the answer's clean end", m, err)
	}
	done()
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", in.URL+"/api/v1/heartbeat", strings.NewReader(`{"load": 0}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cred)
	r := in.Do(t, c, req)
	if r.StatusCode != 200 || !reused {
		t.Fatalf("heartbeat after the stream: %d, connection reused %v, want 200 on the stream's connection", r.StatusCode, reused)
	}
	// Agents ask for a POST stream only of a call manager that says it
	// takes one: an older one would not answer it.
	if got := r.Header.Get("Callplane-Features"); got != "ack-stream, beat-stream" {
		t.Fatalf("Callplane-Features = %q, want ack-stream, beat-stream", got)
	}

	// A refusal does not wait for the body's end.
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ = http.NewRequest("POST", in.URL+"/api/v1/assignments?since=0&wait=1s&stream=1", pr)
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer not-a-credential")
	quick := in.Client(t)
	quick.Timeout = 30 * time.Second
	if resp, err := quick.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("POST stream with a wrong credential: %v %v, want 401 at once", resp, err)
	} else {
		resp.Body.Close()
	}

	// An agent that does not end its body.
	dec, _, done = open()
	defer done()
	untilEnd(dec)
	if err := dec.Decode(&m); err == nil || err == io.EOF {
		t.Fatalf("an agent that kept its body open: %v %v, want its connection closed", m, err)
	}
}

// A POST stream's body carries the agent's heartbeats too: each beat line
// is recorded as POST /heartbeat records it (its load and version, its
// acks), and answered with a line that says what the heartbeat's answer
// says. A disabled node's beats still count and its acks are refused; a
// credential an administrator asked to rotate comes with the answer; a
// credential no longer good ends the stream with an error line.
func TestPostStreamCarriesBeats(t *testing.T) {
	t.Parallel()
	in := cluster(t, 100, "m1")
	cred := enrol(t, in, "m1")
	acks, _ := placeForAcks(t, in, cred, "b", 1)
	r, _ := api(t, in, "POST", "/api/v1/heartbeat", cred, map[string]any{"load": 0, "version": "t0"})
	if f := r.Header.Get("Callplane-Features"); !strings.Contains(f, "beat-stream") {
		t.Fatalf("features %q, want beat-stream listed", f)
	}
	const wait = 60 * time.Second
	lines, pw := openPostStream(t, in, cred, wait)
	nextLine(t, lines, wait/2, "the whole set")
	line := 0
	beat := func(what string, b map[string]any) map[string]any {
		t.Helper()
		line++
		data, _ := json.Marshal(map[string]any{"beat": b})
		if _, err := pw.Write(append(data, '\n')); err != nil {
			t.Fatal(err)
		}
		// Deliveries may come first (disabling the node moves its work).
		for {
			m := nextLine(t, lines, wait/2, what)
			if answer, _ := m["beat"].(map[string]any); answer != nil {
				return answer
			}
			if len(m) == 0 || m["error"] != nil || m["acks"] != nil {
				t.Fatalf("%s: line %v, want a beat's answer", what, m)
			}
		}
	}
	status := func(answer map[string]any) []any {
		var out []any
		for _, x := range answer["acks"].([]any) {
			r := x.(map[string]any)
			if r["ok"] == true {
				out = append(out, "ok")
			} else {
				out = append(out, r["status"])
			}
		}
		return out
	}

	answer := beat("a beat with an ack", map[string]any{"load": 7, "version": "t1", "acks": acks})
	if answer["admin_state"] != "enabled" || answer["heartbeat_interval_ms"] != float64(1000) || fmt.Sprint(status(answer)) != "[ok]" {
		t.Fatalf("a beat's answer = %v, want enabled, the interval and its ack ok", answer)
	}
	if n := count(t, in, "SELECT count(*) FROM work WHERE state = 'active'"); n != 1 {
		t.Fatalf("%d items active after the beat carried the ack, want 1", n)
	}
	// recorded says whether m1's row shows a beat's load and version.
	recorded := func(wantLoad int, wantVersion string) func() bool {
		return func() bool {
			var load int
			var version string
			_ = in.Pool().QueryRow(context.Background(), "SELECT reported_load, agent_version FROM nodes WHERE name = 'm1'").Scan(&load, &version)
			return load == wantLoad && version == wantVersion
		}
	}
	waitFor(t, "the beat's load and version recorded", recorded(7, "t1"))

	if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", "disabled"); err != nil {
		t.Fatal(err)
	}
	answer = beat("a disabled node's beat", map[string]any{"load": 0, "version": "t2", "acks": acks})
	if answer["admin_state"] != "disabled" || fmt.Sprint(status(answer)) != "[403]" {
		t.Fatalf("a disabled node's beat: %v, want disabled and its ack refused 403", answer)
	}
	if _, _, err := in.Nodes().SetAdminState(context.Background(), testActor, "m1", "enabled"); err != nil {
		t.Fatal(err)
	}

	if err := in.Nodes().RequestRotation(context.Background(), testActor, "m1"); err != nil {
		t.Fatal(err)
	}
	answer = beat("a beat after a rotation was asked", map[string]any{"load": 0, "version": "t3"})
	rotated, _ := answer["credential"].(string)
	if !strings.HasPrefix(rotated, "cpn_") {
		t.Fatalf("a beat after a rotation was asked: %v, want the new credential", answer)
	}
	if r, _ := api(t, in, "POST", "/api/v1/heartbeat", rotated, map[string]any{"load": 0, "version": "t4"}); r.StatusCode != 200 {
		t.Fatalf("a heartbeat with the rotated credential: %d", r.StatusCode)
	}

	// A version with a NUL byte, invalid UTF-8 and a negative load: the
	// beat counts, what is kept of it is clean.
	line++
	if _, err := pw.Write([]byte("{\"beat\": {\"load\": -5, \"version\": \"v\\u0000x\xff\"}}\n")); err != nil {
		t.Fatal(err)
	}
	for {
		m := nextLine(t, lines, wait/2, "a hostile beat's answer")
		if m["beat"] != nil {
			break
		}
		if m["error"] != nil {
			t.Fatalf("a beat with a NUL byte and invalid UTF-8 in its version ended the stream: %v", m)
		}
	}
	waitFor(t, "the hostile beat recorded clean", recorded(0, "vx\uFFFD"))

	// The credential the stream opened with is revoked behind its back.
	if _, err := in.Pool().Exec(context.Background(), "DELETE FROM node_credentials WHERE node_id = (SELECT id FROM nodes WHERE name = 'm1')"); err != nil {
		t.Fatal(err)
	}
	in.Nodes().ForgetCredentials(nil)
	line++
	if _, err := io.WriteString(pw, `{"beat": {"load": 0, "version": "t5"}}`+"\n"); err != nil {
		t.Fatal(err)
	}
	m := nextLine(t, lines, wait/2, "the revoked credential's error line")
	if e, _ := m["error"].(string); !strings.Contains(e, fmt.Sprintf("beat: line %d", line)) {
		t.Fatalf("a beat with a revoked credential: %v, want an error naming the beat's line", m)
	}
	streamEnds(t, lines, wait/2, "after its error line")
}

// A stream hands its agent what its own instance placed without reading
// it back (stream_deliveries_total{from="placed"}), and reads the database
// whenever that is not the whole story: a change notified without a
// version (an end), or a placement by another instance. After every
// change the agent holds exactly the node's desired set. Not parallel:
// the counters are process-wide.
func TestStreamDeliversWhatItPlacedWithoutReadingItBack(t *testing.T) {
	url := dbtest.URL(t)
	a := servertest.Start(t, servertest.Options{DatabaseURL: url, InstanceID: "cm-a", Settings: servertest.NoProbes})
	b := servertest.Start(t, servertest.Options{DatabaseURL: url, InstanceID: "cm-b", Settings: servertest.NoProbes})
	a.AddNode(t, "m1", "media", "127.0.0.1:5060", 100)
	exec(t, a, "UPDATE nodes SET health = 'up', enrolled_at = now()")
	cred := enrol(t, a, "m1")
	const wait = 60 * time.Second
	lines, ct := streamLines(t, a, "/api/v1/assignments?since=0&wait=60s&delta=1&stream=1", cred, 2*wait)
	if got := <-ct; !strings.HasPrefix(got, "200") {
		t.Fatalf("stream: %s", got)
	}
	var node int64
	held := map[float64]string{}
	version := 0.0
	// follow reads lines until the agent is at the node's version, then
	// checks it holds the node's whole desired set.
	follow := func(when string) {
		t.Helper()
		if node == 0 {
			node = int64(count(t, a, "SELECT id FROM nodes WHERE name = 'm1'"))
		}
		whole, err := a.Nodes().Desired(context.Background(), node)
		if err != nil {
			t.Fatal(err)
		}
		for version < float64(whole.Version) {
			m := nextLine(t, lines, wait/2, when)
			if m["delta"] != true {
				clear(held)
			}
			for _, x := range m["assignments"].([]any) {
				as := x.(map[string]any)
				held[as["id"].(float64)] = fmt.Sprintf("%s@%v %s", as["ref"], as["epoch"], as["state"])
			}
			removed, _ := m["removed"].([]any)
			for _, id := range removed {
				delete(held, id.(float64))
			}
			version = m["version"].(float64)
		}
		want := map[float64]string{}
		for _, as := range whole.Assignments {
			want[float64(as.ID)] = fmt.Sprintf("%s@%d %s", as.Ref, as.Epoch, as.State)
		}
		if version != float64(whole.Version) || fmt.Sprint(held) != fmt.Sprint(want) {
			t.Fatalf("%s: the agent holds %v at version %v, the node's set is %v at %d", when, held, version, want, whole.Version)
		}
	}
	counted := func() (placed, database float64) {
		return testutil.ToFloat64(metrics.StreamDeliveries.WithLabelValues("placed")),
			testutil.ToFloat64(metrics.StreamDeliveries.WithLabelValues("database"))
	}
	follow("the whole set")
	placed0, db0 := counted()
	for i := range 3 {
		place(t, a, "call", fmt.Sprintf("a%d", i), 1)
		follow(fmt.Sprintf("placed a%d here", i))
	}
	if placed, db := counted(); placed-placed0 != 3 || db != db0 {
		t.Fatalf("three placements here: %v delivered as placed, %v read from the database; want 3 and 0", placed-placed0, db-db0)
	}
	if _, err := a.Nodes().EndWork(context.Background(), testActor, "a1"); err != nil {
		t.Fatal(err)
	}
	follow("ended a1")
	place(t, b, "call", "b0", 1)
	follow("placed b0 on the other instance")
	if placed, db := counted(); placed-placed0 != 3 || db-db0 != 2 {
		t.Fatalf("an end and a placement elsewhere: %v delivered as placed, %v read from the database; want 3 and 2", placed-placed0, db-db0)
	}
	place(t, a, "call", "a3", 1)
	follow("placed a3 here after reading the database")
	if _, err := a.Nodes().PlaceWorkBatch(context.Background(), testActor, []nodes.WorkInput{
		{Kind: "call", Ref: "a4", Cost: 1}, {Kind: "call", Ref: "a5", Cost: 2},
	}); err != nil {
		t.Fatal(err)
	}
	follow("placed a batch here")
	if placed, _ := counted(); placed-placed0 != 5 {
		t.Fatalf("five deliveries of placements here: %v from what was placed", placed-placed0)
	}
}
