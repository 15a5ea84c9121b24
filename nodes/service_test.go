package nodes_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db/dbtest"
	"github.com/callplane/callplane/nodes"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

var actor = nodes.Actor{Name: "test", Addr: "local"}

type env struct {
	t    *testing.T
	ctx  context.Context
	pool *pgxpool.Pool
	svc  *nodes.Service
	port int
}

func setup(t *testing.T) *env {
	t.Helper()
	pool := dbtest.New(t)
	return &env{t: t, ctx: context.Background(), pool: pool, svc: nodes.NewService(pool, nil), port: 5060}
}

// node registers a node and makes it eligible: up and enrolled.
func (e *env) node(name, kind string, capacity, weight int) {
	e.t.Helper()
	e.port++
	addr := "127.0.0.1:" + strconv.Itoa(e.port)
	if kind == nodes.KindMeeting {
		addr = "http://" + addr + "/probe"
	}
	if _, err := e.svc.AddNode(e.ctx, actor, nodes.NodeInput{Name: name, Kind: kind, Address: addr,
		Capacity: strconv.Itoa(capacity), Weight: strconv.Itoa(weight)}); err != nil {
		e.t.Fatal(err)
	}
	e.exec("UPDATE nodes SET health = 'up', enrolled_at = now() WHERE name = $1", name)
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.ctx, sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) place(kind, ref string, cost int) nodes.Placement {
	e.t.Helper()
	p, err := e.svc.PlaceWork(e.ctx, actor, nodes.WorkInput{Kind: kind, Ref: ref, Cost: cost})
	if err != nil {
		e.t.Fatalf("place %s: %v", ref, err)
	}
	return p
}

// load returns the live units on each node, from the work rows.
func (e *env) load() map[string]int {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `SELECT n.name, coalesce(sum(w.cost), 0) FROM nodes n
		LEFT JOIN work w ON w.node_id = n.id AND w.state IN ('assigned', 'active') GROUP BY n.name`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			e.t.Fatal(err)
		}
		out[name] = n
	}
	if e.count("SELECT count(*) FROM nodes n WHERE used <> (SELECT coalesce(sum(cost), 0) FROM work w WHERE w.node_id = n.id AND w.state IN ('assigned', 'active'))") != 0 {
		e.t.Fatal("a node's used counter disagrees with its work")
	}
	return out
}

// Single placements honour weight: weight 300 against 100 on equal
// capacity takes three quarters of the work.
func TestPlaceWorkHonoursWeight(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("heavy", nodes.KindMedia, 100, 300)
	e.node("light", nodes.KindMedia, 100, 100)
	for i := range 40 {
		if p := e.place("call", fmt.Sprintf("c%d", i), 1); p.State != nodes.WorkAssigned {
			t.Fatalf("call %d: %s", i, p.State)
		}
	}
	if l := e.load(); l["heavy"] != 30 || l["light"] != 10 {
		t.Fatalf("weighted single placement: %v, want heavy 30, light 10", l)
	}
}

// A batch follows the same rule, packs bigger items first and never goes
// above capacity.
func TestPlaceWorkBatchBinPacks(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("a", nodes.KindIVR, 4, 100)
	e.node("b", nodes.KindIVR, 4, 100)
	// In input order the four 1s would spread 2+2 and leave no room for
	// either 3; bigger first, each 3 takes a node and the 1s fill around.
	items := []nodes.WorkInput{{Kind: "ivr", Ref: "s1", Cost: 1}, {Kind: "ivr", Ref: "s2", Cost: 1},
		{Kind: "ivr", Ref: "big1", Cost: 3}, {Kind: "ivr", Ref: "big2", Cost: 3}, {Kind: "ivr", Ref: "s3", Cost: 1}, {Kind: "ivr", Ref: "s4", Cost: 1}}
	ps, err := e.svc.PlaceWorkBatch(e.ctx, actor, items)
	if err != nil {
		t.Fatal(err)
	}
	unplaced := 0
	for _, p := range ps {
		if p.State == nodes.WorkUnplaced {
			unplaced++
			if p.Cost != 1 {
				t.Errorf("a big item was left unplaced: %+v", p)
			}
		}
	}
	if l := e.load(); l["a"] != 4 || l["b"] != 4 || unplaced != 2 {
		t.Fatalf("load %v, %d unplaced; want both nodes full and two 1s unplaced", l, unplaced)
	}
}

// Concurrent single placements share transactions (group commit) and
// still never overfill, and a ref placed twice at once wins once.
func TestPlaceWorkConcurrentGroupCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 60, 100)
	e.node("m2", nodes.KindMedia, 60, 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conflicts, placed, unplaced int
	for i := range 300 {
		wg.Go(func() {
			p, err := e.svc.PlaceWork(e.ctx, actor, nodes.WorkInput{Kind: "call", Ref: fmt.Sprintf("c%d", i%150), Cost: 1})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, nodes.ErrConflict):
				conflicts++
			case err != nil:
				t.Errorf("place: %v", err)
			case p.State == nodes.WorkAssigned:
				placed++
			default:
				unplaced++
			}
		})
	}
	wg.Wait()
	if conflicts != 150 || placed != 120 || unplaced != 30 {
		t.Fatalf("conflicts %d placed %d unplaced %d; want 150, 120, 30", conflicts, placed, unplaced)
	}
	if l := e.load(); l["m1"] != 60 || l["m2"] != 60 {
		t.Fatalf("load %v", l)
	}
}

// PlaceCall never picks an excluded node; with every node excluded the
// call waits unplaced.
func TestPlaceCallExcludes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 10, 100)
	e.node("m2", nodes.KindMedia, 10, 100)
	first, err := e.svc.PlaceCall(e.ctx, actor, "call-1", 1, nil)
	if err != nil || first.NodeID == 0 {
		t.Fatalf("first try: %+v %v", first, err)
	}
	second, err := e.svc.PlaceCall(e.ctx, actor, "call-1.2", 1, []int64{first.NodeID})
	if err != nil || second.NodeID == 0 || second.NodeID == first.NodeID {
		t.Fatalf("second try went to %d (first %d): %v", second.NodeID, first.NodeID, err)
	}
	third, err := e.svc.PlaceCall(e.ctx, actor, "call-1.3", 1, []int64{first.NodeID, second.NodeID})
	if err != nil || third.State != nodes.WorkUnplaced || third.NodeID != 0 {
		t.Fatalf("with every node excluded: %+v %v", third, err)
	}
	if _, err := e.svc.PlaceCall(e.ctx, actor, "call-1", 1, nil); !errors.Is(err, nodes.ErrConflict) {
		t.Fatalf("a repeated ref: %v", err)
	}
}

// Waiting work is placed by the same rule when capacity returns.
func TestPlaceUnplacedHonoursWeight(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for i := range 8 {
		if p := e.place("meeting", fmt.Sprintf("w%d", i), 1); p.State != nodes.WorkUnplaced {
			t.Fatalf("no meeting node yet, got %s", p.State)
		}
	}
	e.node("big", nodes.KindMeeting, 10, 300)
	e.node("small", nodes.KindMeeting, 10, 100)
	if n := e.svc.PlaceUnplaced(e.ctx, "meeting", "test"); n != 8 {
		t.Fatalf("placed %d of 8", n)
	}
	if l := e.load(); l["big"] != 6 || l["small"] != 2 {
		t.Fatalf("load %v, want big 6 small 2", l)
	}
}

// Every node that is not eligible is skipped, and Node.Eligible agrees
// with the SQL definition on each of them.
func TestEligibleAgreesWithSQL(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cases := map[string]string{
		"ok":        "",
		"draining":  "admin_state = 'draining'",
		"disabled":  "admin_state = 'disabled'",
		"suspect":   "health = 'suspect'",
		"down":      "health = 'down'",
		"pending":   "health = 'pending'",
		"flapping":  "flapping = true",
		"unenrol":   "enrolled_at = NULL",
		"maint":     "maintenance_until = now() + interval '1 hour', maintenance_reason = 'x'",
		"maintover": "maintenance_until = now() - interval '1 hour', maintenance_reason = 'x'",
		"agentlost": "agent_lost_since = now()",
	}
	for name, set := range cases {
		e.node(name, nodes.KindQueue, 1, 100)
		if set != "" {
			e.exec("UPDATE nodes SET "+set+" WHERE name = $1", name)
		}
	}
	now := time.Now()
	for name := range cases {
		n, err := e.svc.GetNode(e.ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		var sqlSays, sqlCalls bool
		if err := e.pool.QueryRow(e.ctx, "SELECT eligible, answers_calls FROM node_eligibility WHERE name = $1", name).Scan(&sqlSays, &sqlCalls); err != nil {
			t.Fatal(err)
		}
		goSays, goCalls := n.Eligible(now), n.AnswersCalls(now)
		want := name == "ok" || name == "maintover"
		if sqlSays != want || goSays != want {
			t.Errorf("%s: eligible: SQL says %v, Go says %v, want %v", name, sqlSays, goSays, want)
		}
		// A lost agent matters to work its agent must take up, not to
		// SIP calls, which go straight to the media server.
		wantCalls := want || name == "agentlost"
		if sqlCalls != wantCalls || goCalls != wantCalls {
			t.Errorf("%s: answers calls: SQL says %v, Go says %v, want %v", name, sqlCalls, goCalls, wantCalls)
		}
	}
	for i := range 4 {
		e.place("queue", fmt.Sprintf("q%d", i), 1)
	}
	if l := e.load(); l["ok"] != 1 || l["maintover"] != 1 || e.count("SELECT count(*) FROM work WHERE state = 'unplaced'") != 2 {
		t.Fatalf("placement used a node that is not eligible: %v", l)
	}
}

// A node whose agent is lost takes no new work its agent must take up
// (nobody would acknowledge it) but still takes the SIP front door's
// calls, which go straight to its media server.
func TestAgentLostNodeTakesCallsNotAssignments(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m", nodes.KindMedia, 10, 100)
	e.exec("UPDATE nodes SET agent_lost_since = now() WHERE name = 'm'")
	if p := e.place("call", "api-call", 1); p.State != nodes.WorkUnplaced {
		t.Fatalf("work for the agent went to a node whose agent is lost: %+v", p)
	}
	tgt, err := e.svc.PlaceSIPCall(e.ctx, nodes.CallIdentity{Ref: "sip-call", CallID: "c1@test", FromTag: "t1", Instance: "test"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if tgt.NodeName != "m" {
		t.Fatalf("a SIP call skipped the node whose agent is lost: %+v", tgt)
	}
}

// Lowering the capacity below the load keeps the oldest work that fits and
// moves the rest, by the planner, to the nodes with the lowest weighted load.
func TestCapacityLoweredMovesExcess(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("a", nodes.KindMedia, 10, 100)
	for i := range 6 {
		e.place("call", fmt.Sprintf("c%d", i), 1)
	}
	e.node("b", nodes.KindMedia, 10, 100)
	e.node("c", nodes.KindMedia, 10, 300)
	if _, err := e.svc.UpdateNode(e.ctx, actor, "a", nodes.NodeInput{Address: "127.0.0.1:5061", Capacity: "2", Weight: "100"}); err != nil {
		t.Fatal(err)
	}
	if l := e.load(); l["a"] != 2 || l["b"] != 1 || l["c"] != 3 {
		t.Fatalf("load %v, want a 2, b 1, c 3", l)
	}
	// The oldest two stayed.
	if e.count("SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id WHERE n.name = 'a' AND w.ref IN ('c0', 'c1')") != 2 {
		t.Fatal("capacity lowered moved old work instead of the newest")
	}
	if e.count("SELECT count(*) FROM events WHERE type = 'move' AND message LIKE '%capacity lowered%'") != 1 {
		t.Fatal("no move event with its cause")
	}
}

// The preview of every action is exactly what the action then does,
// including multi-unit items that do not fit anywhere.
func TestPreviewEqualsAction(t *testing.T) {
	t.Parallel()
	actions := []nodes.Action{
		{Action: nodes.ActionDisable},
		{Action: nodes.ActionDrain},
		{Action: nodes.ActionRemove},
		{Action: nodes.ActionCapacity, Capacity: 5},
		{Action: nodes.ActionCapacity, Capacity: 1},
		{Action: nodes.ActionCapacity, Capacity: 40},
		{Action: nodes.ActionEnable},
	}
	for _, a := range actions {
		t.Run(a.Action+strconv.Itoa(a.Capacity), func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			// src carries items of cost 1, 2 and 5; the others have room for
			// some of them: x (weight 200) 5 free once it has taken "other",
			// y 4 free; nothing takes a 5.
			e.node("src", nodes.KindIVR, 20, 100)
			costs := []int{5, 1, 2, 1, 2, 1, 5, 1}
			for i, c := range costs {
				e.place("ivr", fmt.Sprintf("i%d", i), c)
			}
			e.node("x", nodes.KindIVR, 6, 200)
			e.node("y", nodes.KindIVR, 4, 100)
			e.place("ivr", "other", 1)
			if l := e.load(); l["src"] != 18 || l["x"] != 1 {
				t.Fatalf("setup: %v", l)
			}

			im, err := e.svc.PreviewChange(e.ctx, "src", a)
			if err != nil {
				t.Fatal(err)
			}
			if e.load()["src"] != 18 || e.count("SELECT count(*) FROM audit_log WHERE actor = 'preview'") != 0 || e.count("SELECT count(*) FROM events WHERE type = 'move'") != 0 {
				t.Fatal("the preview changed something")
			}
			var got nodes.Change
			switch a.Action {
			case nodes.ActionRemove:
				mr, err := e.svc.RemoveNode(e.ctx, actor, "src", true)
				if err != nil {
					t.Fatal(err)
				}
				got = mr.Change
			case nodes.ActionCapacity:
				n, _ := e.svc.GetNode(e.ctx, "src")
				_, err := e.svc.UpdateNode(e.ctx, actor, "src", nodes.NodeInput{Address: n.Address, Capacity: strconv.Itoa(a.Capacity), Weight: "100"})
				if err != nil {
					t.Fatal(err)
				}
				got = lastChange(t, e)
			default:
				target := map[string]string{nodes.ActionDisable: nodes.StateDisabled, nodes.ActionDrain: nodes.StateDraining, nodes.ActionEnable: nodes.StateEnabled}[a.Action]
				_, mr, err := e.svc.SetAdminState(e.ctx, actor, "src", target)
				if err != nil {
					t.Fatal(err)
				}
				got = mr.Change
			}
			if !reflect.DeepEqual(got, im.Change) {
				t.Fatalf("action did\n%+v\npreview said\n%+v", got, im.Change)
			}
			// The change is what the database now says.
			moved := 0
			for dest, items := range got.Moves {
				for _, it := range items {
					if e.count("SELECT count(*) FROM work w JOIN nodes n ON n.id = w.node_id WHERE w.ref = $1 AND n.name = $2", it.Ref, dest) != 1 {
						t.Errorf("%s is not on %s", it.Ref, dest)
					}
					moved++
				}
			}
			for _, it := range got.Unplaced {
				if e.count("SELECT count(*) FROM work WHERE ref = $1 AND state = 'unplaced'", it.Ref) != 1 {
					t.Errorf("%s is not unplaced", it.Ref)
				}
			}
			if moved+len(got.Unplaced)+len(got.Stays) != len(costs) {
				t.Fatalf("the change accounts for %d of %d items", moved+len(got.Unplaced)+len(got.Stays), len(costs))
			}
			switch a.Action {
			case nodes.ActionDisable, nodes.ActionRemove:
				// 18 units, 9 free elsewhere. Bigger first: the first 5
				// takes x's 5 free units, the 2s take y's; the rest waits.
				if len(got.Stays) != 0 || len(got.Unplaced) != 5 || !reflect.DeepEqual(got.Moves["x"], []nodes.ChangeItem{{Ref: "i0", Kind: "ivr", Cost: 5}}) || len(got.Moves["y"]) != 2 {
					t.Fatalf("disable/remove: %+v", got)
				}
			case nodes.ActionDrain, nodes.ActionEnable:
				if len(got.Stays) != len(costs) {
					t.Fatalf("drain/enable moved work: %+v", got)
				}
			}
			if l := e.load(); l["x"] > 6 || l["y"] > 4 {
				t.Fatalf("a node went above capacity: %v", l)
			}
		})
	}
}

// lastChange reads from the database what became of src's items i*:
// moved (a new epoch) to which node, unplaced, or still where they were.
// UpdateNode returns no MoveResult, so its Change is read back this way.
func lastChange(t *testing.T, e *env) nodes.Change {
	t.Helper()
	ch := nodes.Change{Moves: map[string][]nodes.ChangeItem{}, Unplaced: []nodes.ChangeItem{}, Stays: []nodes.ChangeItem{}}
	rows, err := e.pool.Query(e.ctx, `SELECT w.ref, w.kind, w.cost, w.state, coalesce(n.name, ''), w.epoch
		FROM work w LEFT JOIN nodes n ON n.id = w.node_id WHERE w.ref LIKE 'i%' ORDER BY w.id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var it nodes.ChangeItem
		var state, node string
		var epoch int64
		if err := rows.Scan(&it.Ref, &it.Kind, &it.Cost, &state, &node, &epoch); err != nil {
			t.Fatal(err)
		}
		switch {
		case state == nodes.WorkUnplaced:
			ch.Unplaced = append(ch.Unplaced, it)
		case epoch == 1:
			ch.Stays = append(ch.Stays, it)
		default:
			ch.Moves[node] = append(ch.Moves[node], it)
		}
	}
	return ch
}
