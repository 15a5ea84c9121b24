package nodes

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// MaxWorkCost bounds the cost of one work item.
const MaxWorkCost = 10000

// refRE is the safe alphabet of work refs: a ref is one path segment of
// /api/v1/work/{ref} and a form value, so it holds no '/', '%', space or
// anything that needs escaping: a letter or digit, then up to 199 of
// letters, digits and . _ : @ -.
var refRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$`)

// WorkInput is a request to place one work item.
type WorkInput struct {
	Kind string `json:"kind"`
	Ref  string `json:"ref"`
	Cost int    `json:"cost"`
	// Exclude lists node IDs the item must not be placed on (see
	// PlaceCall). It is not part of the public JSON.
	Exclude []int64 `json:"-"`
}

// Placement is where a work item went.
type Placement struct {
	ID       int64  `json:"id"`
	Ref      string `json:"ref"`
	Kind     string `json:"kind"`
	Cost     int32  `json:"cost"`
	State    string `json:"state"`
	Node     string `json:"node,omitempty"`
	NodeID   int64  `json:"-"`
	Epoch    int64  `json:"epoch"`
	Attempts int    `json:"-"`
}

// ValidateWork checks a work request.
func ValidateWork(in WorkInput) problem.FieldErrors {
	fe := problem.FieldErrors{}
	if _, ok := NodeKindFor(in.Kind); !ok {
		fe.Add("kind", "kind must be one of "+strings.Join(WorkKinds, ", "))
	}
	if !refRE.MatchString(in.Ref) {
		fe.Add("ref", "ref must be 1-200 characters: a letter or digit, then letters, digits and . _ : @ - (no /)")
	}
	if in.Cost <= 0 {
		fe.Add("cost", "cost must be at least 1")
	} else if in.Cost > MaxWorkCost {
		fe.Add("cost", fmt.Sprintf("cost must be at most %d", MaxWorkCost))
	}
	return fe
}

// PlaceWork places a new work item on the eligible node Plan picks, or
// records it unplaced (with an event and a capacity alert) when none has
// room. Concurrent placements, single and batch, are committed together:
// while one placement transaction runs, the calls that arrive queue up
// and go in the next one (group commit), so a burst of placements costs a
// few transactions, not one each. An existing ref is ErrConflict.
func (s *Service) PlaceWork(ctx context.Context, actor Actor, in WorkInput) (Placement, error) {
	if fe := ValidateWork(in); len(fe) > 0 {
		return Placement{}, fe
	}
	res, err := s.placer.do(ctx, placeUnit{reqs: []placeReq{{in: in, actor: actor}}})
	if err == nil {
		err = res.err
	}
	if err != nil {
		return Placement{}, err
	}
	if res.out[0].err == nil {
		countPlaced(res.out[0].p.Kind, res.out[0].p.State, "new", 1)
	}
	return res.out[0].p, res.out[0].err
}

// PlaceCall places a new call (work kind "call") of the given cost on a
// media node, never on one of the nodes in exclude: the SIP front door
// calls it again, with the nodes that already failed the INVITE
// excluded, to pick the next node. ref must be new (ErrConflict
// otherwise). When no other node has room the call is recorded unplaced
// (State "unplaced", NodeID 0) and raises a capacity alert.
func (s *Service) PlaceCall(ctx context.Context, actor Actor, ref string, cost int, exclude []int64) (Placement, error) {
	return s.PlaceWork(ctx, actor, WorkInput{Kind: WorkCall, Ref: ref, Cost: cost, Exclude: exclude})
}

// PlaceWorkBatch places many new work items at once, committed with the
// placements that run at the same time (see PlaceWork). Every item is
// validated first; an invalid item (BatchItemErrors) or a ref that
// repeats or already exists (DuplicateRefsError) fails the whole batch
// and writes nothing. The placements come back in input order.
func (s *Service) PlaceWorkBatch(ctx context.Context, actor Actor, items []WorkInput) ([]Placement, error) {
	if err := ValidateWorkBatch(items); err != nil {
		return nil, err
	}
	u := placeUnit{reqs: make([]placeReq, len(items)), strict: true}
	for i, in := range items {
		u.reqs[i] = placeReq{in: in, actor: actor}
	}
	res, err := s.placer.do(ctx, u)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return nil, err
	}
	out := make([]Placement, len(res.out))
	for i, r := range res.out {
		out[i] = r.p
		countPlaced(r.p.Kind, r.p.State, "new", 1)
	}
	return out, nil
}

// placeReq is one new item to place, with who asked.
type placeReq struct {
	in    WorkInput
	actor Actor
}

// placeUnit is what one caller asked to place: one item, or a batch that
// is placed whole or not at all (strict).
type placeUnit struct {
	reqs   []placeReq
	strict bool
}

// placeOutcome is what became of one placeReq.
type placeOutcome struct {
	p   Placement
	err error
}

// unitOutcome is what became of one placeUnit: an outcome per item, or
// err for the unit as a whole.
type unitOutcome struct {
	out []placeOutcome
	err error
}

// placeNew places units under the retry policy, in one transaction, and
// returns an outcome per unit and the nodes whose assignments changed,
// for notifyCommitted. A ref that already exists, or that an earlier unit
// of the group places, fails a strict unit whole (DuplicateRefsError) and
// a single item with ErrConflict; the other units are placed.
func (s *Service) placeNew(ctx context.Context, units []placeUnit) ([]unitOutcome, map[int64]*recentSegment, error) {
	var out []unitOutcome
	var placed map[int64]*recentSegment
	n := 0
	for _, u := range units {
		n += len(u.reqs)
	}
	// taken collects the refs an attempt found in the database; the next
	// attempt leaves out the units that name them.
	taken := map[string]bool{}
	err := db.Retry(ctx, func(attempt int) error {
		return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			out, placed, err = s.placeNewTx(ctx, tx, units, taken, attempt)
			return err
		})
	})
	if err != nil && db.Retryable(err) {
		return nil, nil, fmt.Errorf("place %d work items: nodes too busy: %w", n, err)
	}
	return out, placed, err
}

// placeNewTx is one attempt of placeNew, two statements: the first takes
// the placement turn of the items' node kinds (placements of the same
// kinds take turns across instances, so they do not invalidate each
// other's plans) and reads the eligible nodes; Plan plans; the second
// locks the chosen nodes in id order, checks the plan against their
// latest state (a serialization failure, run again, when it no longer
// holds), inserts the work rows and adds to the used counters. A ref that
// turns out to exist already is added to taken and the attempt rolled
// back, so the next one leaves its unit out.
func (s *Service) placeNewTx(ctx context.Context, tx pgx.Tx, units []placeUnit, taken map[string]bool, attempt int) ([]unitOutcome, map[int64]*recentSegment, error) {
	// Which units go ahead: a ref taken, or placed by an earlier unit of
	// the group, fails its unit as it would one placement after another.
	res := make([]unitOutcome, len(units))
	used := maps.Clone(taken)
	var reqs []placeReq
	var at [][2]int // unit and item of each req
	for ui, u := range units {
		res[ui].out = make([]placeOutcome, len(u.reqs))
		var dups []string
		for _, r := range u.reqs {
			if used[r.in.Ref] {
				dups = append(dups, r.in.Ref)
			}
		}
		switch {
		case u.strict && len(dups) > 0:
			res[ui] = unitOutcome{err: &DuplicateRefsError{Refs: dups}}
			continue
		case len(dups) > 0: // a single item
			res[ui].out[0].err = fmt.Errorf("work %q: %w", u.reqs[0].in.Ref, ErrConflict)
			continue
		}
		for i, r := range u.reqs {
			used[r.in.Ref] = true
			reqs = append(reqs, r)
			at = append(at, [2]int{ui, i})
		}
	}
	if len(reqs) == 0 {
		return res, nil, nil
	}
	var nodeKinds []string
	for _, r := range reqs {
		nk, _ := NodeKindFor(r.in.Kind)
		if !slices.Contains(nodeKinds, nk) {
			nodeKinds = append(nodeKinds, nk)
		}
	}
	rows, err := s.q.NodePlacementCandidates(ctx, tx, nodeKinds)
	if err != nil {
		return nil, nil, err
	}
	cands, names := candidatesByKind(rows)
	dest := planByKind(reqs, cands)

	p := dbsqlc.WorkPlaceParams{
		Refs: make([]string, len(reqs)), Kinds: make([]string, len(reqs)),
		Costs: make([]int32, len(reqs)), NodeIds: dest,
	}
	for i, r := range reqs {
		p.Refs[i], p.Kinds[i], p.Costs[i] = r.in.Ref, r.in.Kind, int32(r.in.Cost)
	}
	inserted, err := s.q.WorkPlace(ctx, tx, p)
	if err != nil {
		return nil, nil, err
	}
	byRef := make(map[string]dbsqlc.WorkPlaceRow, len(inserted))
	for _, r := range inserted {
		byRef[r.Ref] = r
	}
	if len(inserted) != len(reqs) {
		for _, r := range reqs {
			if _, ok := byRef[r.in.Ref]; !ok {
				taken[r.in.Ref] = true
			}
		}
		return nil, nil, db.ErrRetry
	}
	out := make([]placeOutcome, len(reqs))
	// What each node got, from its version before to the group's: the
	// deltas its agent's stream takes without reading them back.
	placed := map[int64]*recentSegment{}
	for i, r := range reqs {
		row := byRef[r.in.Ref]
		out[i].p = Placement{ID: row.ID, Ref: r.in.Ref, Kind: r.in.Kind, Cost: int32(r.in.Cost), State: row.State,
			Node: names[dest[i]], NodeID: dest[i], Epoch: row.Epoch, Attempts: attempt}
		res[at[i][0]].out[at[i][1]] = out[i]
		if row.NodeID == 0 {
			continue
		}
		sg := placed[row.NodeID]
		if sg == nil {
			sg = &recentSegment{prev: row.PrevVersion, version: row.NewVersion}
			placed[row.NodeID] = sg
		}
		sg.items = append(sg.items, assignment(row.ID, r.in.Ref, r.in.Kind, int32(r.in.Cost), row.Epoch, row.State, nil, nil, nil))
	}
	if err := s.recordUnplaced(ctx, tx, reqs, out, attempt); err != nil {
		return nil, nil, err
	}
	return res, placed, nil
}

// candidatesByKind groups candidate rows by node kind and names them.
func candidatesByKind[R dbsqlc.NodeCandidatesRow | dbsqlc.NodePlacementCandidatesRow](rows []R) (map[string][]Candidate, map[int64]string) {
	cands := map[string][]Candidate{}
	names := make(map[int64]string, len(rows))
	for _, r := range rows {
		n := dbsqlc.NodeCandidatesRow(r)
		names[n.ID] = n.Name
		cands[n.Kind] = append(cands[n.Kind], Candidate{ID: n.ID, Name: n.Name, Capacity: n.Capacity, Used: n.Used, Weight: n.Weight})
	}
	return cands, names
}

// planByKind runs Plan once per node kind over that kind's items and
// candidates, and returns the node per request (0: unplaced).
func planByKind(reqs []placeReq, cands map[string][]Candidate) []int64 {
	dest := make([]int64, len(reqs))
	byKind := map[string][]int{}
	for i, r := range reqs {
		nk, _ := NodeKindFor(r.in.Kind)
		byKind[nk] = append(byKind[nk], i)
	}
	for nk, idx := range byKind {
		items := make([]PlanItem, len(idx))
		for j, i := range idx {
			items[j] = PlanItem{Cost: int32(reqs[i].in.Cost), Exclude: reqs[i].in.Exclude}
		}
		for j, d := range Plan(items, cands[nk]) {
			dest[idx[j]] = d
		}
	}
	return dest
}

// recordUnplaced writes, for the items that fit nowhere, one event per
// work kind and actor and a capacity alert. Should room have appeared
// since the plan was read (work ended, a node came up), it asks for the
// transaction to run again (db.ErrRetry) rather than leave work waiting
// needlessly, while attempts remain.
func (s *Service) recordUnplaced(ctx context.Context, tx pgx.Tx, reqs []placeReq, out []placeOutcome, attempt int) error {
	type group struct {
		kind  string
		actor string
	}
	var order []group
	byGroup := map[group][]int{}
	for i, o := range out {
		if o.err != nil || o.p.State != WorkUnplaced {
			continue
		}
		g := group{reqs[i].in.Kind, reqs[i].actor.Name}
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], i)
	}
	if len(order) == 0 {
		return nil
	}
	if attempt < db.TxAttempts-1 {
		var kinds []string
		var waiting []placeReq
		for _, g := range order {
			nk, _ := NodeKindFor(g.kind)
			kinds = append(kinds, nk)
			for _, i := range byGroup[g] {
				waiting = append(waiting, reqs[i])
			}
		}
		now, err := s.q.NodeCandidates(ctx, tx, kinds)
		if err != nil {
			return err
		}
		cands, _ := candidatesByKind(now)
		if slices.ContainsFunc(planByKind(waiting, cands), func(d int64) bool { return d != 0 }) {
			return db.ErrRetry
		}
	}
	alerted := map[string]bool{}
	for _, g := range order {
		idx := byGroup[g]
		nk, _ := NodeKindFor(g.kind)
		var msg string
		if len(idx) == 1 {
			in := reqs[idx[0]].in
			msg = fmt.Sprintf("No %s node has room for %s %s (cost %d): it waits unplaced", nk, in.Kind, in.Ref, in.Cost)
		} else {
			var cost int
			refs := make([]string, 0, min(len(idx), 10))
			for _, i := range idx {
				cost += reqs[i].in.Cost
				if len(refs) < 10 {
					refs = append(refs, reqs[i].in.Ref)
				}
			}
			list := strings.Join(refs, ", ")
			if len(idx) > len(refs) {
				list += fmt.Sprintf(" and %d more", len(idx)-len(refs))
			}
			msg = fmt.Sprintf("No %s node has room for %s (cost %d): they wait unplaced: %s",
				nk, WorkNoun(g.kind, int64(len(idx))), cost, list)
		}
		if err := s.event(ctx, tx, nil, "unplaced", "critical", g.actor, msg); err != nil {
			return err
		}
		if !alerted[g.kind] {
			alerted[g.kind] = true
			if err := s.capacityAlert(ctx, tx, g.kind); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxGroupItems bounds the items of one group placement transaction.
const maxGroupItems = 2 * MaxBatch

// newPlacer returns the group commit of placements: one transaction and
// one notification of the agents per group.
func newPlacer(s *Service) *groupCommit[placeUnit, unitOutcome] {
	return &groupCommit[placeUnit, unitOutcome]{
		maxItems: maxGroupItems,
		size:     func(u placeUnit) int { return len(u.reqs) },
		run: func(ctx context.Context, units []placeUnit) []unitOutcome {
			out, placed, err := s.placeNew(ctx, units)
			if err != nil {
				out = make([]unitOutcome, len(units))
				for i := range out {
					out[i].err = err
				}
				return out
			}
			// Kept before the notification goes, so the streams it wakes
			// here find them (see recentDeltas).
			touched := make([]int64, 0, len(placed))
			var version int64
			for id, sg := range placed {
				s.recent.placed(id, sg.prev, sg.version, sg.items)
				touched = append(touched, id)
				version = sg.version
			}
			s.notifyPlaced(ctx, version, touched)
			return out
		},
	}
}
