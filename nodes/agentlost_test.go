package nodes_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/health"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/server"
)

// A node whose agent is lost (its service answers the probe, its agent
// stopped heartbeating) takes no new assignments: work for it waits
// unplaced, through the checker's rounds and any other attempt to place
// waiting work. When the agent heartbeats again the checker's next round
// clears the flag and places the waiting work on the node. The real
// checker runs each round here, behind a real lease, against a real TCP
// endpoint (an IM node's probe is a TCP connect).
func TestAgentLostNodeGetsItsWaitingWorkWhenTheAgentReturns(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithCancel(e.ctx)
	t.Cleanup(cancel)

	// The node's service: accepts connections, as an IM server would.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	n, err := e.svc.AddNode(ctx, actor, nodes.NodeInput{Name: "im-1", Kind: nodes.KindIM, Address: ln.Addr().String(), Capacity: "10", Weight: "100"})
	if err != nil {
		t.Fatal(err)
	}
	// Up and enrolled; its agent last heartbeat an hour ago.
	e.exec("UPDATE nodes SET health = 'up', enrolled_at = now(), last_heartbeat_at = now() - interval '1 hour' WHERE id = $1", n.ID)

	lead := server.NewLeader(e.pool, "cm-test", 30*time.Second, slog.New(slog.DiscardHandler))
	go lead.Run(ctx)
	store := health.NewStore(e.svc, e.pool, settings.Defaults{}, "", nil)
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chk := health.NewChecker(e.svc, store, lead, nil)
	round := func() {
		t.Helper()
		// The lease's epoch as of now: a renewal that came late on a busy
		// machine may have moved it.
		var epoch int64
		waitUntil(t, "leadership", func() bool { var ok bool; epoch, ok = lead.Epoch(); return ok })
		if err := chk.Round(ctx, epoch, st); err != nil {
			t.Fatalf("checker round: %v", err)
		}
	}
	get := func() nodes.Node {
		t.Helper()
		list, err := e.svc.ListNodes(ctx, nodes.NodeFilter{})
		if err != nil || len(list) != 1 {
			t.Fatalf("list nodes: %v %v", list, err)
		}
		return list[0]
	}
	// Staleness counts once the checker has led for the stale time; then
	// a round flags the agent lost.
	waitUntil(t, "im-1 flagged agent lost", func() bool { round(); return get().AgentLost() })
	if got := get(); got.Health != nodes.HealthUp {
		t.Fatalf("agent lost made the node %s; want up", got.Health)
	}

	for _, ref := range []string{"shard-1", "shard-2"} {
		if p := e.place(nodes.WorkIM, ref, 2); p.State != nodes.WorkUnplaced {
			t.Fatalf("%s went to the node whose agent is lost: %+v", ref, p)
		}
	}
	version := get().AssignVersion
	round()
	if placed := e.svc.PlaceAllUnplaced(ctx, "test"); placed != 0 {
		t.Fatalf("%d waiting items placed on the node whose agent is lost", placed)
	}
	if got := get(); !got.AgentLost() || got.Used != 0 || e.count("SELECT count(*) FROM work WHERE state = 'unplaced'") != 2 {
		t.Fatalf("while the agent is lost: agent lost %v, used %d, want the 2 items waiting", got.AgentLost(), got.Used)
	}

	// The agent is back: its heartbeat is recorded and flushed as the
	// agent API does; the next round clears the flag and places the work.
	hb := e.svc.NewHeartbeats(time.Hour)
	hb.Record(n.ID, 0, "nodeagent/test")
	hb.Flush(ctx)
	round()
	got := get()
	if got.AgentLost() {
		t.Fatal("a round after a fresh heartbeat left the agent lost")
	}
	if got.Used != 4 || e.count("SELECT count(*) FROM work WHERE state = 'assigned' AND node_id = $1", n.ID) != 2 {
		t.Fatalf("after the agent returned: used %d, %d items still waiting; want both on im-1",
			got.Used, e.count("SELECT count(*) FROM work WHERE state = 'unplaced'"))
	}
	if got.AssignVersion == version {
		t.Fatal("the node's assignment version did not move: its agent is not told of the work")
	}
	if e.count("SELECT count(*) FROM events WHERE node_name = 'im-1' AND message LIKE '%agent heartbeating again%'") != 1 {
		t.Fatal("no event for the agent's return")
	}
}

// waitUntil polls cond with a generous bound: CI is a busy machine.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
