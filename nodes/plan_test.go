package nodes

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestPlan(t *testing.T) {
	t.Parallel()
	n := func(id int64, capacity, used, weight int32) Candidate {
		return Candidate{ID: id, Capacity: capacity, Used: used, Weight: weight}
	}
	costs := func(cs ...int32) []PlanItem {
		out := make([]PlanItem, len(cs))
		for i, c := range cs {
			out[i] = PlanItem{Cost: c}
		}
		return out
	}
	tests := []struct {
		name  string
		items []PlanItem
		cands []Candidate
		want  []int64
	}{
		{"no candidates: unplaced", costs(1, 1), nil, []int64{0, 0}},
		{"no items", nil, []Candidate{n(1, 10, 0, 100)}, []int64{}},
		{"equal nodes alternate, lower id wins ties", costs(1, 1, 1, 1), []Candidate{n(2, 10, 0, 100), n(1, 10, 0, 100)}, []int64{1, 2, 1, 2}},
		{"least loaded first", costs(1), []Candidate{n(1, 10, 5, 100), n(2, 10, 4, 100)}, []int64{2}},
		{"load is relative to capacity", costs(1, 1, 1), []Candidate{n(1, 10, 0, 100), n(2, 100, 0, 100)}, []int64{2, 2, 2}},
		// Weight 200 against 100 takes twice the share: 1/2000 < 1/1000,
		// then 2/2000 ties 1/1000 (lower id), then 3/2000 > 1/1000.
		{"weight doubles the share", costs(1, 1, 1), []Candidate{n(1, 10, 0, 200), n(2, 10, 0, 100)}, []int64{1, 1, 2}},
		{"weight counts even when capacities differ", costs(1), []Candidate{n(1, 100, 50, 100), n(2, 10, 4, 1000)}, []int64{2}},
		{"never above capacity", costs(1, 1, 1), []Candidate{n(1, 2, 1, 100)}, []int64{1, 0, 0}},
		{"a full node is skipped", costs(1), []Candidate{n(1, 5, 5, 100), n(2, 100, 99, 100)}, []int64{2}},
		// Bigger first: the 3 goes on the empty node 2 even though it comes
		// last, and the 1s fill around it; in input order it would be left
		// without room.
		{"multi-unit items first", costs(1, 1, 3), []Candidate{n(1, 3, 1, 100), n(2, 3, 0, 100)}, []int64{1, 1, 2}},
		{"an item bigger than any node is unplaced, smaller ones still go", costs(5, 1), []Candidate{n(1, 4, 0, 100)}, []int64{0, 1}},
		{"multi-unit items that do not fit after packing", costs(2, 2, 2), []Candidate{n(1, 3, 0, 100), n(2, 3, 0, 100)}, []int64{1, 2, 0}},
		{"lowest load after placing, not before", costs(4), []Candidate{n(1, 10, 0, 100), n(2, 40, 8, 100)}, []int64{2}},
		{"zero-cost or zero-capacity never places", costs(0), []Candidate{n(1, 0, 0, 100)}, []int64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.items, tc.cands)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Plan = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlanExclude(t *testing.T) {
	t.Parallel()
	cands := []Candidate{{ID: 1, Capacity: 10, Weight: 100}, {ID: 2, Capacity: 10, Used: 9, Weight: 100}}
	got := Plan([]PlanItem{{Cost: 1, Exclude: []int64{1}}, {Cost: 1, Exclude: []int64{1, 2}}}, cands)
	if !slices.Equal(got, []int64{2, 0}) {
		t.Fatalf("Plan with exclusions = %v, want [2 0]", got)
	}
}

func TestPlanDoesNotChangeCandidates(t *testing.T) {
	t.Parallel()
	cands := []Candidate{{ID: 2, Capacity: 10, Weight: 100}, {ID: 1, Capacity: 10, Weight: 100}}
	before := slices.Clone(cands)
	Plan([]PlanItem{{Cost: 3}, {Cost: 3}}, cands)
	if !slices.Equal(cands, before) {
		t.Fatalf("Plan changed its input: %v", cands)
	}
}

// TestPlanLevels checks the property moves rely on: placing many unit
// items on nodes of different capacities and weights leaves every node's
// weighted load within one item of the others, and the totals add up.
func TestPlanLevels(t *testing.T) {
	t.Parallel()
	cands := []Candidate{
		{ID: 1, Capacity: 100, Used: 30, Weight: 100},
		{ID: 2, Capacity: 50, Used: 0, Weight: 100},
		{ID: 3, Capacity: 200, Used: 10, Weight: 50},
		{ID: 4, Capacity: 100, Used: 0, Weight: 300},
	}
	items := make([]PlanItem, 120)
	for i := range items {
		items[i] = PlanItem{Cost: 1}
	}
	got := Plan(items, cands)
	load := map[int64]int32{}
	for _, c := range cands {
		load[c.ID] = c.Used
	}
	for _, d := range got {
		if d == 0 {
			t.Fatal("an item was left unplaced with room to spare")
		}
		load[d]++
	}
	score := func(c Candidate, used int32) float64 {
		return float64(used) / float64(c.Capacity) / float64(c.Weight)
	}
	// Every node that received work is at most one item above the
	// lightest node's load after one more item.
	for _, a := range cands {
		if load[a.ID] == a.Used {
			continue
		}
		for _, b := range cands {
			if score(a, load[a.ID]) > score(b, load[b.ID]+1)+1e-12 {
				t.Fatalf("node %d (load %d) is heavier than node %d would be with one more (%d): %v", a.ID, load[a.ID], b.ID, load[b.ID], load)
			}
		}
	}
}

// planByScan is the rule as first written: each item, biggest first, on
// the fitting candidate with the lowest weighted load after taking it,
// the lower ID on a tie, found by a scan of every candidate.
func planByScan(items []PlanItem, cands []Candidate) []int64 {
	out := make([]int64, len(items))
	ns := slices.Clone(cands)
	slices.SortFunc(ns, func(a, b Candidate) int { return cmp.Compare(a.ID, b.ID) })
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(items[b].Cost, items[a].Cost) })
	// a's load after taking cost below b's: (a.used+cost)/(a.cap*a.weight)
	// < (b.used+cost)/(b.cap*b.weight), cross-multiplied.
	below := func(a, b Candidate, cost int32) bool {
		return int64(a.Used+cost)*int64(b.Capacity)*int64(b.Weight) < int64(b.Used+cost)*int64(a.Capacity)*int64(a.Weight)
	}
	for _, i := range order {
		it := items[i]
		best := -1
		for j, n := range ns {
			if it.Cost <= 0 || n.Capacity <= 0 || n.Weight <= 0 || n.Used+it.Cost > n.Capacity || slices.Contains(it.Exclude, n.ID) {
				continue
			}
			if best < 0 || below(n, ns[best], it.Cost) {
				best = j
			}
		}
		if best >= 0 {
			ns[best].Used += it.Cost
			out[i] = ns[best].ID
		}
	}
	return out
}

// Plan gives the plan a scan of every candidate for every item gives, on
// random clusters and batches: mixed costs, full and unweighted nodes,
// items excluding nodes, ties.
func TestPlanAgreesWithAScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		cands := make([]Candidate, 1+rng.IntN(40))
		for j := range cands {
			cands[j] = Candidate{ID: int64(100 - j*2 + rng.IntN(2)), Capacity: int32(rng.IntN(12)),
				Used: 0, Weight: int32(rng.IntN(4))}
			cands[j].Used = int32(rng.IntN(int(cands[j].Capacity) + 1))
		}
		items := make([]PlanItem, rng.IntN(60))
		for i := range items {
			items[i].Cost = int32(rng.IntN(4))
			if rng.IntN(8) == 0 {
				items[i].Exclude = []int64{cands[rng.IntN(len(cands))].ID}
			}
		}
		want := planByScan(items, cands)
		if got := Plan(items, cands); !slices.Equal(got, want) {
			t.Fatalf("round %d: Plan %v, a scan %v\nitems %+v\ncandidates %+v", round, got, want, items, cands)
		}
	}
}

// BenchmarkPlan plans a placement group as the bench's load makes them:
// 400 calls over 1,000 media nodes (BenchmarkPlanByScan: the same by a
// scan of every node for every item).
func BenchmarkPlan(b *testing.B) { benchmarkPlan(b, Plan) }

func BenchmarkPlanByScan(b *testing.B) { benchmarkPlan(b, planByScan) }

func benchmarkPlan(b *testing.B, plan func([]PlanItem, []Candidate) []int64) {
	cands := make([]Candidate, 1000)
	for j := range cands {
		cands[j] = Candidate{ID: int64(j + 1), Capacity: 1000, Used: int32(j % 37), Weight: 100}
	}
	items := make([]PlanItem, 400)
	for i := range items {
		items[i].Cost = 1
	}
	b.ReportAllocs()
	for b.Loop() {
		plan(items, cands)
	}
}
