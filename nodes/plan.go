package nodes

import (
	"cmp"
	"slices"
)

// PlanItem is one work item the planner places.
type PlanItem struct {
	Cost int32
	// Exclude lists nodes this item must not go to (a SIP call retried
	// after the node it was sent to failed).
	Exclude []int64
}

// Candidate is an eligible node as the planner sees it: its room and its
// weight. Used already counts the work it carries.
type Candidate struct {
	ID       int64
	Name     string
	Capacity int32
	Used     int32
	Weight   int32
}

// Plan is the one placement rule of Callplane. It returns, for each item
// in the order given, the ID of the candidate it goes to, or 0 when it
// fits nowhere. Items are placed biggest first (so small items do not
// take the room a big one needs), each on the candidate with the lowest
// weighted load after placing it, (used + cost) / capacity / weight,
// never above capacity; ties go to the lower node ID, so the same input
// always gives the same plan. Every placement path (single, batch, SIP
// call, moves off a node, waiting work) and every preview calls it.
//
// Plan is pure: it does not change cands.
func Plan(items []PlanItem, cands []Candidate) []int64 {
	out := make([]int64, len(items))
	if len(items) == 0 || len(cands) == 0 {
		return out
	}
	nodes := slices.Clone(cands)
	slices.SortFunc(nodes, func(a, b Candidate) int { return cmp.Compare(a.ID, b.ID) })
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(items[b].Cost, items[a].Cost) })
	for _, i := range order {
		it := items[i]
		best := -1
		for j := range nodes {
			n := &nodes[j]
			if it.Cost <= 0 || n.Capacity <= 0 || n.Weight <= 0 || n.Used+it.Cost > n.Capacity || slices.Contains(it.Exclude, n.ID) {
				continue
			}
			if best < 0 || lighter(n, &nodes[best], it.Cost) {
				best = j
			}
		}
		if best >= 0 {
			nodes[best].Used += it.Cost
			out[i] = nodes[best].ID
		}
	}
	return out
}

// lighter reports whether a's weighted load after taking cost is below
// b's: (a.used+cost)/(a.cap*a.weight) < (b.used+cost)/(b.cap*b.weight),
// compared exactly in integers.
func lighter(a, b *Candidate, cost int32) bool {
	l := int64(a.Used+cost) * int64(b.Capacity) * int64(b.Weight)
	r := int64(b.Used+cost) * int64(a.Capacity) * int64(a.Weight)
	return l < r
}
