package nodes_test

import (
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
)

// A flush of heartbeats does not wait for a node another transaction holds
// (a placement group holds its nodes to its commit): it writes the other
// nodes' beats and leaves that one for the next flush, which waits for the
// lock and writes it.
func TestHeartbeatsDoNotWaitForALockedNodeTwice(t *testing.T) {
	e := setup(t)
	e.node("m1", nodes.KindMedia, 10, 1)
	e.node("m2", nodes.KindMedia, 10, 1)
	m1, m2 := e.nodeID("m1"), e.nodeID("m2")
	beat := func(id int64) bool {
		return e.count("SELECT count(*) FROM nodes WHERE id = $1 AND last_heartbeat_at IS NOT NULL", id) == 1
	}
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(e.ctx)
	if _, err := tx.Exec(e.ctx, "SELECT 1 FROM nodes WHERE id = $1 FOR NO KEY UPDATE", m1); err != nil {
		t.Fatal(err)
	}
	hb := e.svc.NewHeartbeats(time.Hour)
	flush := func() <-chan struct{} {
		done := make(chan struct{})
		go func() {
			hb.Flush(e.ctx)
			close(done)
		}()
		return done
	}
	hb.Record(m1, 1, "a")
	hb.Record(m2, 1, "a")
	select {
	case <-flush():
	case <-time.After(time.Minute):
		t.Fatal("a flush waited for a node another transaction holds")
	}
	if beat(m1) || !beat(m2) {
		t.Fatalf("after the first flush: m1 written %v (locked: want false), m2 %v (want true)", beat(m1), beat(m2))
	}

	// The next flush waits for the lock, and writes the beat once it is
	// released, a newer beat meanwhile included.
	hb.Record(m1, 2, "b")
	done := flush()
	for i := 0; e.count("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%NodeHeartbeatBatch%'") == 0; i++ {
		select {
		case <-done:
			t.Fatal("the second flush did not wait for the locked node")
		case <-time.After(10 * time.Millisecond):
		}
		if i > 6000 {
			t.Fatal("the second flush never waited for the lock")
		}
	}
	if err := tx.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if n := e.count("SELECT count(*) FROM nodes WHERE id = $1 AND reported_load = 2 AND agent_version = 'b'", m1); n != 1 {
		t.Fatal("the skipped node's newer beat was not written by the next flush")
	}
}
