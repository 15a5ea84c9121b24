package nodes_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// An ack (assigned to active) is written in place: no index of work names
// the state or updated_at, and a page keeps room for the acks of the rows
// placed on it, so every ack is a HOT update, with no new index entry
// (migration 00021). It fails with an index that names the state (every
// ack then writes index entries) and with pages filled to the brim (the
// acks of a full page's rows go to another page). The counts come from
// Postgres's statistics of this test's database, which its backends send
// within a few seconds.
func TestAcksUpdateWorkInPlace(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 1000, 1)
	e.node("m2", nodes.KindMedia, 1000, 1)
	const items = 400
	var in []nodes.WorkInput
	for i := range items {
		in = append(in, nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("hot-%d", i), Cost: 1})
	}
	ps, err := e.svc.PlaceWorkBatch(e.ctx, actor, in)
	if err != nil {
		t.Fatal(err)
	}
	acks := map[int64][]agentproto.Ack{}
	for _, p := range ps {
		if p.State != nodes.WorkAssigned {
			t.Fatalf("placed %+v, want assigned", p)
		}
		acks[p.NodeID] = append(acks[p.NodeID], agentproto.Ack{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive})
	}
	for node, list := range acks {
		for len(list) > 0 {
			n := min(len(list), agentproto.MaxAckBatch)
			res, err := e.svc.AckBatch(e.ctx, node, list[:n])
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Err != nil {
					t.Fatalf("ack %d: %v", r.ID, r.Err)
				}
			}
			list = list[n:]
		}
	}
	if n := e.count("SELECT count(*) FROM work WHERE state = 'active'"); n != items {
		t.Fatalf("%d items active, want %d", n, items)
	}
	var upd, hot int
	for deadline := time.Now().Add(time.Minute); ; {
		if err := e.pool.QueryRow(e.ctx, "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'work'").Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		if upd >= items || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if upd != items || hot != upd {
		t.Fatalf("work rows updated %d times, %d of them in place (HOT); want %d, all in place", upd, hot, items)
	}
}
