package sipfront_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/callplane/callplane/nodes/sipfront"
	"github.com/callplane/callplane/server/servertest"
)

// rawCaller is a bare UDP socket that sends hand-written requests, so a
// test can send the very same INVITE again, as a caller retransmits it.
type rawCaller struct {
	conn net.PacketConn
	to   *net.UDPAddr
}

func newRawCaller(t *testing.T, front string) *rawCaller {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	to, err := net.ResolveUDPAddr("udp", front)
	if err != nil {
		t.Fatal(err)
	}
	return &rawCaller{conn: conn, to: to}
}

// invite is an initial INVITE from this socket; branch names its
// transaction.
func (c *rawCaller) invite(callID, fromTag, branch string) []byte {
	me := c.conn.LocalAddr().String()
	return []byte(strings.ReplaceAll(fmt.Sprintf("INVITE sip:service@%[1]s SIP/2.0\n"+
		"Via: SIP/2.0/UDP %[2]s;branch=%[3]s\n"+
		"Max-Forwards: 70\n"+
		"From: <sip:caller@%[2]s>;tag=%[4]s\n"+
		"To: <sip:service@%[1]s>\n"+
		"Call-ID: %[5]s\n"+
		"CSeq: 1 INVITE\n"+
		"Contact: <sip:caller@%[2]s>\n"+
		"Content-Length: 0\n\n", c.to.String(), me, branch, fromTag, callID), "\n", "\r\n"))
}

func (c *rawCaller) send(t *testing.T, msg []byte) {
	t.Helper()
	if _, err := c.conn.WriteTo(msg, c.to); err != nil {
		t.Fatal(err)
	}
}

// await reads responses until one of the transaction named by branch has
// the wanted status code, within a generous bound.
func (c *rawCaller) await(t *testing.T, branch string, code int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	buf := make([]byte, 65535)
	for time.Now().Before(deadline) {
		_ = c.conn.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			continue
		}
		text := string(buf[:n])
		if strings.HasPrefix(text, fmt.Sprintf("SIP/2.0 %d ", code)) && strings.Contains(text, "branch="+branch) {
			return
		}
	}
	t.Fatalf("no %d for the INVITE of branch %s", code, branch)
}

// holdMediaNodes locks the media nodes' rows, as a long transaction of
// another writer would, so that placements wait; the returned function
// lets them go.
func (e *env) holdMediaNodes(t *testing.T) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := e.in.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT id FROM nodes WHERE kind = 'media' ORDER BY id FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			_ = tx.Rollback(ctx)
		}
	}
	t.Cleanup(release)
	return release
}

// An INVITE the caller sends again while its call is being placed is a
// retransmission: the server transaction absorbs it (the caller gets 100
// Trying again), and exactly one call is placed and forwarded. A new
// transaction with the same Call-ID and From tag while that call is live
// is a merged request: 482, and still one call.
func TestRetransmittedInvitePlacesOneCall(t *testing.T) {
	t.Parallel()
	e := setup(t, servertest.Options{})
	m := startMedia(t, modeAnswer)
	e.addMedia(t, "m1", m.addr, 10, 100)
	e.waitUp(t, "m1")

	c := newRawCaller(t, e.front.Addr())
	callID, fromTag := "retransmitted-invite-1", "rt1"
	ref := sipfront.CallRef(callID, fromTag)
	invite := c.invite(callID, fromTag, "z9hG4bK-rt-1")

	// Placements wait behind a lock on the nodes, so the copies arrive
	// while the first INVITE is being placed.
	release := e.holdMediaNodes(t)
	c.send(t, invite)
	c.await(t, "z9hG4bK-rt-1", 100)
	c.send(t, invite)
	c.send(t, invite)
	c.await(t, "z9hG4bK-rt-1", 100) // the server transaction answers the copy
	waitFor(t, "the call's placement to wait for the node lock", func() bool {
		return e.count(t, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%SipMediaLockEligible%'") > 0
	})
	release()
	c.await(t, "z9hG4bK-rt-1", 200)

	if n := e.count(t, "SELECT count(*) FROM work WHERE ref = $1", ref); n != 1 {
		t.Fatalf("%d work rows for the call, want 1", n)
	}
	if n := e.count(t, "SELECT count(*) FROM work_history h JOIN work w ON w.id = h.work_id WHERE w.ref = $1", ref); n != 1 {
		t.Fatalf("%d history entries for the call's work, want 1 (placed once)", n)
	}
	if n := e.count(t, "SELECT used FROM nodes WHERE name = 'm1'"); n != 1 {
		t.Fatalf("m1 used = %d, want 1", n)
	}
	m.mu.Lock()
	forwarded := m.callIDs[callID]
	m.mu.Unlock()
	if forwarded != 1 {
		t.Fatalf("the media node got %d INVITEs for the call, want 1", forwarded)
	}

	// A new transaction for the same dialog identity: a merged request.
	c.send(t, c.invite(callID, fromTag, "z9hG4bK-rt-2"))
	c.await(t, "z9hG4bK-rt-2", 482)
	if n := e.count(t, "SELECT used FROM nodes WHERE name = 'm1'"); n != 1 {
		t.Fatalf("m1 used = %d after the merged request, want 1", n)
	}
	m.mu.Lock()
	forwarded = m.callIDs[callID]
	m.mu.Unlock()
	if forwarded != 1 {
		t.Fatalf("the media node got %d INVITEs for the call after the merged request, want 1", forwarded)
	}
}

// The caller gets the answer to its BYE only once the end of the call's
// work is committed: until then it holds the BYE (and retransmits it), so
// a call that ended is never left live by a crash of the front door.
func TestByeIsAnsweredOnceTheEndIsDurable(t *testing.T) {
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
	ref := refOf(sess)
	ctx := context.Background()
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// The end cannot commit while the call's nodes are locked.
	release := e.holdMediaNodes(t)
	byeDone := make(chan error, 1)
	go func() { byeDone <- sess.Bye(ctx) }()
	waitFor(t, "the BYE at the media node", func() bool { return m.count(sip.BYE) == 1 })
	select {
	case err := <-byeDone:
		t.Fatalf("the BYE was answered (err %v) before the call's end was committed", err)
	case <-time.After(2 * time.Second):
	}
	release()
	select {
	case err := <-byeDone:
		if err != nil {
			t.Fatalf("BYE through the front door: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the BYE was never answered")
	}
	// No polling: the end is committed before the answer is sent.
	if got := e.text(t, "SELECT w.state || ' ' || c.state || ' ' || c.cause FROM work w JOIN sip_calls c ON c.ref = w.ref WHERE w.ref = $1", ref); got != "ended ended bye" {
		t.Fatalf("work and call after the BYE's answer: %q, want \"ended ended bye\"", got)
	}
	if n := e.count(t, "SELECT used FROM nodes WHERE name = 'm1'"); n != 0 {
		t.Fatalf("m1 used = %d after the BYE's answer, want 0", n)
	}
}
