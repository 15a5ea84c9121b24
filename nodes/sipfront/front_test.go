package sipfront_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes/sipfront"
	"github.com/callplane/callplane/server"
	"github.com/callplane/callplane/server/servertest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// env is a call manager with its SIP front door on a loopback port.
type env struct {
	in    *servertest.Instance
	front *sipfront.Front
}

// testSettings keep probes patient on a busy machine and the try timeout
// short enough for a test to see a silent node skipped.
var testSettings = map[string]string{"probe_interval": "1s", "probe_timeout": "900ms", "sip_try_timeout": "1500ms"}

func setup(t *testing.T, opts servertest.Options) *env {
	t.Helper()
	if opts.Settings == nil {
		opts.Settings = testSettings
	}
	configure := opts.Configure
	opts.Configure = func(c *server.Config) {
		c.SIPListen = "127.0.0.1:0"
		if configure != nil {
			configure(c)
		}
	}
	in := servertest.Start(t, opts)
	if in.SIP() == nil {
		t.Fatal("the SIP front door is off")
	}
	return &env{in: in, front: in.SIP()}
}

// addMedia registers a media node at addr as if its agent had enrolled
// and kept heartbeating, so the health checker probes it (SIP OPTIONS)
// and brings it up. The heartbeat stands in for the node agent, which is
// not what these tests are about.
func (e *env) addMedia(t *testing.T, name, addr string, capacity, weight int) {
	t.Helper()
	e.in.AddNode(t, name, "media", addr, capacity)
	e.exec(t, "UPDATE nodes SET enrolled_at = now(), last_heartbeat_at = now(), weight = $2 WHERE name = $1", name, weight)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = e.in.Pool().Exec(ctx, "UPDATE nodes SET last_heartbeat_at = now() WHERE name = $1", name)
			}
		}
	}()
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := e.in.Pool().Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.in.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) text(t *testing.T, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := e.in.Pool().QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// waitFor polls a condition with a generous bound: no timing assertions.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) waitUp(t *testing.T, names ...string) {
	t.Helper()
	waitFor(t, "media nodes up", func() bool {
		return e.count(t, "SELECT count(*) FROM nodes WHERE name = ANY($1) AND health = 'up'", names) == len(names)
	})
}

// invite places a call through the front door and waits for its final
// answer.
func (c *caller) invite(t *testing.T, addr string) (*sipgo.DialogClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := c.dialog.Invite(ctx, target(addr), nil)
	if err != nil {
		t.Fatalf("send INVITE: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess, sess.WaitAnswer(ctx, sipgo.AnswerOptions{})
}

func refOf(sess *sipgo.DialogClientSession) string {
	tag, _ := sess.InviteRequest.From().Params.Get("tag")
	return sipfront.CallRef(sess.InviteRequest.CallID().Value(), tag)
}

func TestCallIsPlacedAnsweredAndEndedByBye(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	m := startMedia(t, modeAnswer)
	e.addMedia(t, "m1", m.addr, 10, 100)
	e.waitUp(t, "m1")

	c := newCaller(t)
	sess, err := c.invite(t, e.front.Addr())
	if err != nil {
		t.Fatalf("call through the front door: %v", err)
	}
	rr := sess.InviteResponse.RecordRoute()
	if rr == nil || rr.Address.Host != "127.0.0.1" || !strings.HasSuffix(e.front.Public(), ":"+itoa(rr.Address.Port)) || !rr.Address.UriParams.Has("lr") {
		t.Fatalf("2xx Record-Route = %v, want <sip:%s;lr>", rr, e.front.Public())
	}
	ref := refOf(sess)
	if got := e.text(t, "SELECT n.name FROM work w JOIN nodes n ON n.id = w.node_id WHERE w.ref = $1 AND w.kind = 'call' AND w.state = 'assigned'", ref); got != "m1" {
		t.Fatalf("call work placed on %q, want m1", got)
	}
	waitFor(t, "call answered with the callee's tag", func() bool {
		return e.count(t, "SELECT count(*) FROM sip_calls WHERE ref = $1 AND state = 'answered' AND to_tag <> ''", ref) == 1
	})
	ctx := context.Background()
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE through the front door: %v", err)
	}
	waitFor(t, "work ended", func() bool {
		return e.count(t, "SELECT count(*) FROM work WHERE ref = $1 AND state = 'ended'", ref) == 1
	})
	waitFor(t, "call row ended by the BYE", func() bool {
		return e.text(t, "SELECT state || ' ' || cause FROM sip_calls WHERE ref = $1", ref) == "ended bye"
	})
	if n := e.count(t, "SELECT used FROM nodes WHERE name = 'm1'"); n != 0 {
		t.Fatalf("m1 used = %d after the call ended, want 0", n)
	}
	// At least one of each: under load the media node may resend its 2xx
	// before the ACK arrives, and the caller then acks it again (RFC 3261
	// 13.2.2.4); that is not a fault of the front door.
	waitFor(t, "ACK and BYE at the media node", func() bool { return m.count(sip.ACK) >= 1 && m.count(sip.BYE) >= 1 })
}

func TestFailoverOn503AndSilenceThenAnswer(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	busy := startMedia(t, modeBusy)
	silentAddr, silentInvites := silentMedia(t)
	good := startMedia(t, modeAnswer)
	// Equal weights; the lower weighted load goes first, so the order of
	// tries is busy (1/100), silent (1/50), good (1/10).
	e.addMedia(t, "busy", busy.addr, 100, 100)
	e.addMedia(t, "silent", silentAddr, 50, 100)
	e.addMedia(t, "good", good.addr, 10, 100)
	e.waitUp(t, "busy", "silent", "good")

	c := newCaller(t)
	sess, err := c.invite(t, e.front.Addr())
	if err != nil {
		t.Fatalf("call should reach the third node: %v", err)
	}
	ref := refOf(sess)
	if got := e.text(t, "SELECT tries || ' ' || array_to_string(failovers, ',') FROM sip_calls WHERE ref = $1", ref); got != "3 503,timeout" {
		t.Fatalf("tries and failover causes = %q, want 3 503,timeout", got)
	}
	if got := e.text(t, "SELECT n.name FROM work w JOIN nodes n ON n.id = w.node_id WHERE w.ref = $1 AND w.state = 'assigned'", ref); got != "good" {
		t.Fatalf("call runs on %q, want good", got)
	}
	if busy.count(sip.INVITE) != 1 || silentInvites.Load() < 1 {
		t.Fatalf("INVITEs at busy=%d silent=%d, want each tried", busy.count(sip.INVITE), silentInvites.Load())
	}
	if n := e.count(t, "SELECT used FROM nodes WHERE name = 'busy'") + e.count(t, "SELECT used FROM nodes WHERE name = 'silent'"); n != 0 {
		t.Fatalf("failed nodes still count %d calls", n)
	}
	if n := e.count(t, `SELECT count(*) FROM probe_results p JOIN nodes n ON n.id = p.node_id
		WHERE n.name = 'silent' AND NOT p.ok AND p.detail LIKE 'SIP front door%'`); n != 1 {
		t.Fatalf("failed probes recorded for the silent node = %d, want 1", n)
	}
	_ = sess.Ack(context.Background())
	_ = sess.Bye(context.Background())
}

func TestNoNodeLeftAnswers503WithRetryAfter(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	c := newCaller(t)

	// No media node at all.
	sess, err := c.invite(t, e.front.Addr())
	assert503(t, sess, err)
	if got := e.text(t, "SELECT state || ': ' || cause FROM sip_calls WHERE ref = $1", refOf(sess)); got != "failed: no media node available" {
		t.Fatalf("call row = %q", got)
	}

	// Two nodes that both answer 503: both tried, then 503.
	b1, b2 := startMedia(t, modeBusy), startMedia(t, modeBusy)
	e.addMedia(t, "b1", b1.addr, 10, 100)
	e.addMedia(t, "b2", b2.addr, 10, 100)
	e.waitUp(t, "b1", "b2")
	sess, err = c.invite(t, e.front.Addr())
	assert503(t, sess, err)
	waitFor(t, "the call recorded failed after two tries", func() bool {
		return e.text(t, "SELECT state || ': ' || cause || ' ' || tries FROM sip_calls WHERE ref = $1", refOf(sess)) == "failed: all tries failed 2"
	})
	if b1.count(sip.INVITE) != 1 || b2.count(sip.INVITE) != 1 {
		t.Fatalf("INVITEs b1=%d b2=%d, want 1 each", b1.count(sip.INVITE), b2.count(sip.INVITE))
	}
	if n := e.count(t, "SELECT count(*) FROM work WHERE kind = 'call' AND state <> 'ended'"); n != 0 {
		t.Fatalf("%d call work items still live", n)
	}
}

func assert503(t *testing.T, sess *sipgo.DialogClientSession, err error) {
	t.Helper()
	var de *sipgo.ErrDialogResponse
	if !errors.As(err, &de) || de.Res.StatusCode != 503 {
		t.Fatalf("answer = %v, want 503", err)
	}
	if h := de.Res.GetHeader("Retry-After"); h == nil || h.Value() == "" {
		t.Fatal("503 without Retry-After")
	}
}

func TestCancelEndsTheWork(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	m := startMedia(t, modeRing)
	e.addMedia(t, "m1", m.addr, 10, 100)
	e.waitUp(t, "m1")

	c := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := c.dialog.Invite(ctx, target(e.front.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ring, stop := context.WithCancel(ctx)
	err = sess.WaitAnswer(ring, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
		if res.StatusCode == 180 {
			stop() // hang up while it rings: WaitAnswer sends the CANCEL
		}
		return nil
	}})
	if err == nil {
		t.Fatal("a cancelled call was answered")
	}
	ref := refOf(sess)
	select {
	case <-m.cancelCh:
	case <-time.After(60 * time.Second):
		t.Fatal("the media node never saw the CANCEL")
	}
	waitFor(t, "call ended by CANCEL", func() bool {
		return e.count(t, "SELECT count(*) FROM sip_calls WHERE ref = $1 AND state = 'ended' AND cause = 'cancelled'", ref) == 1
	})
	if n := e.count(t, "SELECT count(*) FROM work WHERE ref = $1 AND state = 'ended'", ref); n != 1 {
		t.Fatal("the cancelled call's work is still live")
	}
}

func TestOutOfDialogRequests(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	c := newCaller(t)
	if res := c.do(t, sip.OPTIONS, e.front.Addr()); res.StatusCode != 200 {
		t.Fatalf("OPTIONS = %d, want 200", res.StatusCode)
	}
	res := c.do(t, sip.REGISTER, e.front.Addr())
	if res.StatusCode != 405 {
		t.Fatalf("REGISTER = %d, want 405", res.StatusCode)
	}
	if h := res.GetHeader("Allow"); h == nil || !strings.Contains(h.Value(), "INVITE") {
		t.Fatalf("405 Allow = %v", h)
	}
	mf := sip.MaxForwardsHeader(0)
	if res := c.do(t, sip.INVITE, e.front.Addr(), &mf); res.StatusCode != 483 {
		t.Fatalf("INVITE with Max-Forwards 0 = %d, want 483", res.StatusCode)
	}
}

// Two instances behind one public address share the database: a call set
// up through one is routed and ended through the other.
func TestInDialogRequestsThroughAnotherInstance(t *testing.T) {
	t.Parallel()
	const vip = "127.0.0.1:5999" // what a load balancer in front of both would answer on
	a := setup(t, servertest.Options{InstanceID: "cm-a", Configure: func(c *server.Config) { c.SIPPublic = vip }})
	b := setup(t, servertest.Options{InstanceID: "cm-b", DatabaseURL: a.in.DBURL, Configure: func(c *server.Config) { c.SIPPublic = vip }})
	m := startMedia(t, modeAnswer)
	a.addMedia(t, "m1", m.addr, 10, 100)
	a.waitUp(t, "m1")

	c := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inv := sip.NewRequest(sip.INVITE, target(vip))
	inv.SetDestination(a.front.Addr())
	res, err := c.client.Do(ctx, inv)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("INVITE through instance a: %v %v", res, err)
	}
	if rr := res.RecordRoute(); rr == nil || rr.Address.Host+":"+itoa(rr.Address.Port) != vip {
		t.Fatalf("Record-Route = %v, want the shared public address %s", rr, vip)
	}
	fromTag, _ := inv.From().Params.Get("tag")
	ref := sipfront.CallRef(inv.CallID().Value(), fromTag)

	inDialog := func(method sip.RequestMethod, seq uint32) *sip.Request {
		req := sip.NewRequest(method, res.Contact().Address)
		req.AppendHeader(&sip.RouteHeader{Address: res.RecordRoute().Address})
		req.AppendHeader(sip.HeaderClone(inv.From()))
		req.AppendHeader(sip.HeaderClone(res.To()))
		req.AppendHeader(sip.HeaderClone(inv.CallID()))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		req.SetDestination(b.front.Addr())
		return req
	}
	if err := c.client.WriteRequest(inDialog(sip.ACK, inv.CSeq().SeqNo)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ACK at the media node", func() bool { return m.count(sip.ACK) == 1 })
	bye, err := c.client.Do(ctx, inDialog(sip.BYE, inv.CSeq().SeqNo+1))
	if err != nil || bye.StatusCode != 200 {
		t.Fatalf("BYE through instance b: %v %v", bye, err)
	}
	// At least one of each: under load the media node may resend its 2xx
	// before the ACK arrives, and the caller then acks it again (RFC 3261
	// 13.2.2.4); that is not a fault of the front door.
	waitFor(t, "ACK and BYE at the media node", func() bool { return m.count(sip.ACK) >= 1 && m.count(sip.BYE) >= 1 })
	waitFor(t, "the call ended by the BYE through b", func() bool {
		return a.text(t, "SELECT w.state || ' ' || c.cause || ' ' || c.instance FROM sip_calls c JOIN work w ON w.id = c.work_id WHERE c.ref = $1", ref) == "ended bye cm-a"
	})
	if b.front.Stats().InDialog.Load() < 2 {
		t.Fatalf("instance b routed %d in-dialog requests, want the ACK and the BYE", b.front.Stats().InDialog.Load())
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// A call over TCP to a media node on UDP: the front door record-routes
// twice, once per transport, so each side reaches it on its own.
func TestCallOverTCPIsRecordRoutedPerTransport(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	m := startMedia(t, modeAnswer)
	e.addMedia(t, "m1", m.addr, 10, 100)
	e.waitUp(t, "m1")

	c := newCaller(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	to := target(e.front.Addr())
	to.UriParams = sip.HeaderParams{{K: "transport", V: "tcp"}}
	sess, err := c.dialog.Invite(ctx, to, nil)
	if err != nil {
		t.Fatalf("INVITE over TCP: %v", err)
	}
	defer sess.Close()
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("call over TCP: %v", err)
	}
	var transports []string
	for _, h := range sess.InviteResponse.GetHeaders("Record-Route") {
		rr := h.(*sip.RecordRouteHeader)
		tp, _ := rr.Address.UriParams.Get("transport")
		transports = append(transports, tp)
	}
	if strings.Join(transports, ",") != "udp,tcp" {
		t.Fatalf("Record-Route transports = %v, want udp (toward the media node) then tcp (toward the caller)", transports)
	}
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE over TCP: %v", err)
	}
	waitFor(t, "the call ended by its BYE", func() bool {
		return e.count(t, "SELECT count(*) FROM sip_calls WHERE ref = $1 AND state = 'ended' AND cause = 'bye'", refOf(sess)) == 1
	})
}

// A call that never sees a BYE ends at the maximum call duration, and is
// counted.
func TestCallsEndAtTheMaximumDuration(t *testing.T) {
	t.Parallel()
	settings := map[string]string{"sip_max_call_duration": "1m"}
	for k, v := range testSettings {
		settings[k] = v
	}
	e := setup(t, servertest.Options{Settings: settings})
	m := startMedia(t, modeAnswer)
	e.addMedia(t, "m1", m.addr, 10, 100)
	e.waitUp(t, "m1")
	c := newCaller(t)
	sess, err := c.invite(t, e.front.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = sess.Ack(context.Background())
	ref := refOf(sess)
	// The caller vanishes; two minutes pass.
	e.exec(t, "UPDATE sip_calls SET created_at = now() - interval '2 minutes' WHERE ref = $1", ref)
	waitFor(t, "the call ended at the maximum duration", func() bool {
		return e.count(t, `SELECT count(*) FROM sip_calls c JOIN work w ON w.id = c.work_id
			WHERE c.ref = $1 AND c.state = 'ended' AND c.cause = 'max duration' AND w.state = 'ended'`, ref) == 1
	})
	if n := e.count(t, "SELECT used FROM nodes WHERE name = 'm1'"); n != 0 {
		t.Fatalf("m1 still counts %d calls", n)
	}
	if n := e.count(t, "SELECT count(*) FROM events WHERE type = 'call' AND message LIKE '%maximum call duration%'"); n != 1 {
		t.Fatalf("max-duration events = %d, want 1", n)
	}
}
