package nodes_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/agentproto"
)

// Batches and single placements from several instances at once, some of
// them naming the same ref: they are committed in groups, yet a batch is
// placed whole or not at all, each contested ref goes to exactly one
// caller, no node goes above capacity, and the counters equal the rows.
func TestPlaceGroupsBatchesAndSinglesAcrossInstances(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// 120 units: fewer than the fewest items that can be written (at
	// most six batches lose their contest), so both nodes end full.
	e.node("m1", nodes.KindMedia, 60, 100)
	e.node("m2", nodes.KindMedia, 60, 100)
	instances := []*nodes.Service{e.svc}
	for range 5 {
		instances = append(instances, nodes.NewService(e.pool, nil))
	}

	const batches, size, singles = 10, 25, 20
	batch := make([][]nodes.WorkInput, batches)
	for b := range batch {
		for i := range size {
			batch[b] = append(batch[b], nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("b%d-%d", b, i), Cost: 1})
		}
	}
	batch[9][7].Ref = "b0-3" // b0 and b9 contest one ref
	single := make([]string, singles)
	for i := range single {
		single[i] = fmt.Sprintf("s%d", i)
	}
	for i := range 5 {
		single[i] = fmt.Sprintf("b%d-0", i+1) // single i contests b(i+1)
	}

	var wg sync.WaitGroup
	batchErr := make([]error, batches)
	batchOut := make([][]nodes.Placement, batches)
	singleErr := make([]error, singles)
	for b := range batches {
		wg.Go(func() {
			batchOut[b], batchErr[b] = instances[b%2].PlaceWorkBatch(e.ctx, actor, batch[b])
		})
	}
	for i := range singles {
		wg.Go(func() {
			_, singleErr[i] = instances[i%2].PlaceWork(e.ctx, actor, nodes.WorkInput{Kind: nodes.WorkCall, Ref: single[i], Cost: 1})
		})
	}
	// Meanwhile every instance places small batches one after another, so
	// that transactions of several instances overlap all along.
	const fillRounds, fillSize = 8, 5
	for k, svc := range instances {
		wg.Go(func() {
			for r := range fillRounds {
				items := make([]nodes.WorkInput, fillSize)
				for i := range items {
					items[i] = nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("f%d-%d-%d", k, r, i), Cost: 1}
				}
				if _, err := svc.PlaceWorkBatch(e.ctx, actor, items); err != nil {
					t.Errorf("fill batch %d/%d: %v", k, r, err)
				}
			}
		})
	}
	wg.Wait()

	for b, err := range batchErr {
		var dup *nodes.DuplicateRefsError
		switch {
		case err == nil:
			if len(batchOut[b]) != size {
				t.Fatalf("batch %d: %d placements, want %d", b, len(batchOut[b]), size)
			}
			for i, p := range batchOut[b] {
				if p.Ref != batch[b][i].Ref || e.count("SELECT count(*) FROM work WHERE id = $1 AND ref = $2", p.ID, p.Ref) != 1 {
					t.Fatalf("batch %d item %d: placement %+v is not in the database", b, i, p)
				}
			}
		case errors.As(err, &dup):
			// Nothing of a refused batch is written: count its refs that
			// no other caller names.
			if n := e.count("SELECT count(*) FROM work WHERE ref LIKE $1 AND ref NOT IN ('b0-3', $2)", fmt.Sprintf("b%d-%%", b), fmt.Sprintf("b%d-0", b)); n != 0 {
				t.Fatalf("batch %d was refused (%v) but %d of its items were written", b, err, n)
			}
		default:
			t.Fatalf("batch %d: %v", b, err)
		}
	}
	for i, err := range singleErr {
		if err != nil && !errors.Is(err, nodes.ErrConflict) {
			t.Fatalf("single %s: %v", single[i], err)
		}
	}
	// Each contested ref went to exactly one of its two callers.
	if (batchErr[0] == nil) == (batchErr[9] == nil) {
		t.Fatalf("b0 and b9 contest one ref: errors %v and %v, want exactly one to fail", batchErr[0], batchErr[9])
	}
	for i := range 5 {
		if (singleErr[i] == nil) == (batchErr[i+1] == nil) {
			t.Fatalf("single %s and batch %d contest one ref: errors %v and %v, want exactly one to fail", single[i], i+1, singleErr[i], batchErr[i+1])
		}
	}

	rows := e.count("SELECT count(*) FROM work")
	want := singles + len(instances)*fillRounds*fillSize
	for b := range batches {
		if batchErr[b] == nil {
			want += size
		}
	}
	for i := range 5 {
		if singleErr[i] != nil {
			want-- // lost its ref to the batch
		}
	}
	if rows != want {
		t.Fatalf("work rows: %d, want %d", rows, want)
	}
	if l := e.load(); l["m1"] != 60 || l["m2"] != 60 {
		t.Fatalf("load %v, want both nodes full (%d items for 120 units)", l, rows)
	}
	if n := e.count("SELECT count(*) FROM work WHERE state = 'unplaced'"); n != rows-120 {
		t.Fatalf("unplaced %d, want %d", n, rows-120)
	}
	if n := e.count("SELECT count(*) FROM nodes WHERE used > capacity"); n != 0 {
		t.Fatal("a node is above capacity")
	}
}

// Active acks of many agents at once are committed together, yet each is
// fenced on its own: the right node with the right epoch activates the
// item, the same item acked by another node or with another epoch changes
// nothing and says why, whether sent alone or in a batch.
func TestActiveAcksOfManyNodesAtOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.node("m1", nodes.KindMedia, 100, 100)
	e.node("m2", nodes.KindMedia, 100, 100)
	items := make([]nodes.WorkInput, 40)
	for i := range items {
		items[i] = nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("c%d", i), Cost: 1}
	}
	ps, err := e.svc.PlaceWorkBatch(e.ctx, actor, items)
	if err != nil {
		t.Fatal(err)
	}
	other := map[int64]int64{} // node id -> the other node's id
	for _, p := range ps {
		for _, q := range ps {
			if q.NodeID != p.NodeID {
				other[p.NodeID] = q.NodeID
			}
		}
	}
	type result struct {
		what string
		err  error
	}
	var mu sync.Mutex
	var results []result
	note := func(what string, err error) {
		mu.Lock()
		results = append(results, result{what, err})
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			if i%2 == 0 {
				note("right", e.svc.Ack(e.ctx, p.NodeID, agentproto.Ack{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive}))
				return
			}
			res, err := e.svc.AckBatch(e.ctx, p.NodeID, []agentproto.Ack{{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive}})
			if err != nil {
				t.Errorf("batch ack: %v", err)
				return
			}
			note("right", res[0].Err)
		})
		wg.Go(func() {
			note("other node", e.svc.Ack(e.ctx, other[p.NodeID], agentproto.Ack{ID: p.ID, Epoch: p.Epoch, State: nodes.WorkActive}))
		})
		wg.Go(func() {
			res, err := e.svc.AckBatch(e.ctx, p.NodeID, []agentproto.Ack{{ID: p.ID, Epoch: p.Epoch + 1, State: nodes.WorkActive}})
			if err != nil {
				t.Errorf("batch ack: %v", err)
				return
			}
			note("stale epoch", res[0].Err)
		})
	}
	wg.Wait()
	for _, r := range results {
		switch r.what {
		case "right":
			if r.err != nil {
				t.Errorf("ack by the right node: %v", r.err)
			}
		case "other node":
			if !errors.Is(r.err, nodes.ErrNotFound) {
				t.Errorf("ack by another node: %v, want not found", r.err)
			}
		case "stale epoch":
			if !errors.Is(r.err, nodes.ErrStaleEpoch) {
				t.Errorf("ack with another epoch: %v, want stale epoch", r.err)
			}
		}
	}
	if n := e.count("SELECT count(*) FROM work WHERE state = 'active'"); n != len(ps) {
		t.Fatalf("%d of %d items active", n, len(ps))
	}
	if n := e.count("SELECT count(*) FROM work_history WHERE state = 'active'"); n != len(ps) {
		t.Fatalf("%d history rows for activation, want %d", n, len(ps))
	}
}
