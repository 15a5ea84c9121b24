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
//
// The items of one cost, biggest first, take the candidates from a heap
// ordered by the weighted load each would have after taking that cost: a
// group of 400 calls over 1,000 nodes costs 400 heap updates, not 400
// scans of every node. An item with nodes to exclude scans them (it is a
// retried SIP call, one at a time).
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
	h := planHeap{nodes: nodes}
	for _, i := range order {
		it := items[i]
		if it.Cost <= 0 {
			continue
		}
		if len(it.Exclude) > 0 {
			if best := scanBest(nodes, it); best >= 0 {
				nodes[best].Used += it.Cost
				out[i] = nodes[best].ID
			}
			h.cost = 0 // the heap's order may no longer hold: rebuilt below
			continue
		}
		if h.cost != it.Cost {
			h.build(it.Cost)
		}
		if best := h.take(); best >= 0 {
			out[i] = nodes[best].ID
		}
	}
	return out
}

// fits reports whether n may take an item of cost.
func fits(n *Candidate, cost int32) bool {
	return n.Capacity > 0 && n.Weight > 0 && n.Used+cost <= n.Capacity
}

// before orders candidates for an item of cost: the lower weighted load
// after taking it, then the lower ID.
func before(a, b *Candidate, cost int32) bool {
	return lighter(a, b, cost) || (!lighter(b, a, cost) && a.ID < b.ID)
}

// scanBest is the candidate an item with nodes to exclude goes to, by a
// scan of them all, or -1.
func scanBest(nodes []Candidate, it PlanItem) int {
	best := -1
	for j := range nodes {
		n := &nodes[j]
		if !fits(n, it.Cost) || slices.Contains(it.Exclude, n.ID) {
			continue
		}
		if best < 0 || before(n, &nodes[best], it.Cost) {
			best = j
		}
	}
	return best
}

// planHeap is a min-heap of indexes into nodes, by before for one cost,
// holding the nodes an item of that cost fits.
type planHeap struct {
	nodes []Candidate
	cost  int32
	idx   []int
}

func (h *planHeap) build(cost int32) {
	h.cost = cost
	h.idx = h.idx[:0]
	for j := range h.nodes {
		if fits(&h.nodes[j], cost) {
			h.idx = append(h.idx, j)
		}
	}
	for i := len(h.idx)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// take gives the first node an item of the heap's cost to carry, or -1
// when none fits; a node that then fits no other item of that cost
// leaves the heap.
func (h *planHeap) take() int {
	if len(h.idx) == 0 {
		return -1
	}
	best := h.idx[0]
	h.nodes[best].Used += h.cost
	if !fits(&h.nodes[best], h.cost) {
		last := len(h.idx) - 1
		h.idx[0] = h.idx[last]
		h.idx = h.idx[:last]
	}
	h.down(0)
	return best
}

func (h *planHeap) less(i, j int) bool {
	return before(&h.nodes[h.idx[i]], &h.nodes[h.idx[j]], h.cost)
}

func (h *planHeap) down(i int) {
	for n := len(h.idx); ; {
		m, l, r := i, 2*i+1, 2*i+2
		if l < n && h.less(l, m) {
			m = l
		}
		if r < n && h.less(r, m) {
			m = r
		}
		if m == i {
			return
		}
		h.idx[i], h.idx[m] = h.idx[m], h.idx[i]
		i = m
	}
}

// lighter reports whether a's weighted load after taking cost is below
// b's: (a.used+cost)/(a.cap*a.weight) < (b.used+cost)/(b.cap*b.weight),
// compared exactly in integers.
func lighter(a, b *Candidate, cost int32) bool {
	l := int64(a.Used+cost) * int64(b.Capacity) * int64(b.Weight)
	r := int64(b.Used+cost) * int64(a.Capacity) * int64(a.Weight)
	return l < r
}
