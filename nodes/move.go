package nodes

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
)

// ChangeItem is one work item in a Change.
type ChangeItem struct {
	Ref  string `json:"ref"`
	Kind string `json:"kind"`
	Cost int32  `json:"cost"`
}

// Change says what an action does to the work of a node: which items
// move to which node, which fit nowhere and wait unplaced, and which stay.
// A preview (PreviewChange) and the action it previews compute it with the
// same code, so the two are equal when nothing changed in between.
type Change struct {
	Moves    map[string][]ChangeItem `json:"moves"`
	Unplaced []ChangeItem            `json:"unplaced"`
	Stays    []ChangeItem            `json:"stays"`
}

func newChange() Change {
	return Change{Moves: map[string][]ChangeItem{}, Unplaced: []ChangeItem{}, Stays: []ChangeItem{}}
}

// MoveResult is what a move did: counts for messages, and the Change.
type MoveResult struct {
	Moved    int
	Unplaced int
	To       map[string]int // node name -> items received
	Change   Change
}

// Summary says what a move did in words: "12 calls moved to media-2 (8), media-3 (4); 2 unplaced".
func (m MoveResult) Summary(workKind string) string {
	if m.Moved == 0 && m.Unplaced == 0 {
		return "no work to move"
	}
	var b strings.Builder
	if m.Moved > 0 {
		names := make([]string, 0, len(m.To))
		for n := range m.To {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, 0, len(names))
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s (%d)", n, m.To[n]))
		}
		fmt.Fprintf(&b, "%s moved to %s", WorkNoun(workKind, int64(m.Moved)), strings.Join(parts, ", "))
	}
	if m.Unplaced > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s unplaced: no capacity left", WorkNoun(workKind, int64(m.Unplaced)))
	}
	return b.String()
}

// liveItem is a live work item of a node, as moves read it.
type liveItem struct {
	id   int64
	ref  string
	kind string
	cost int32
}

func (it liveItem) change() ChangeItem { return ChangeItem{Ref: it.ref, Kind: it.kind, Cost: it.cost} }

// liveWork locks and returns a node's live work, oldest first.
func (s *Service) liveWork(ctx context.Context, tx pgx.Tx, nodeID int64) ([]liveItem, error) {
	rows, err := s.q.WorkLiveOnNode(ctx, tx, &nodeID)
	if err != nil {
		return nil, err
	}
	items := make([]liveItem, len(rows))
	for i, r := range rows {
		items[i] = liveItem{id: r.ID, ref: r.Ref, kind: r.Kind, cost: r.Cost}
	}
	return items, nil
}

// staysAll is the result of an action that moves none of a node's work.
func (s *Service) staysAll(ctx context.Context, tx pgx.Tx, nodeID int64) (MoveResult, error) {
	items, err := s.liveWork(ctx, tx, nodeID)
	if err != nil {
		return MoveResult{}, err
	}
	mr := MoveResult{To: map[string]int{}, Change: newChange()}
	for _, it := range items {
		mr.Change.Stays = append(mr.Change.Stays, it.change())
	}
	return mr, nil
}

// moveAway moves all live work off node within tx, placed by Plan on the
// other eligible nodes of its kind; what fits nowhere becomes unplaced. It
// is set-based: one read, one update, one recount, one notification.
func (s *Service) moveAway(ctx context.Context, tx pgx.Tx, node *dbsqlc.Node, cause string, actor Actor) (MoveResult, error) {
	items, err := s.liveWork(ctx, tx, node.ID)
	if err != nil {
		return MoveResult{}, err
	}
	return s.moveOff(ctx, tx, node, items, nil, cause, actor)
}

// moveExcess moves work off a node whose capacity is now below its load.
// The oldest work stays as long as it fits the new capacity (an item that
// does not fit is passed over for younger, smaller ones); the rest moves.
func (s *Service) moveExcess(ctx context.Context, tx pgx.Tx, node *dbsqlc.Node, cause string, actor Actor) (MoveResult, error) {
	items, err := s.liveWork(ctx, tx, node.ID)
	if err != nil {
		return MoveResult{}, err
	}
	var stays, moves []liveItem
	var kept int32
	for _, it := range items {
		if kept+it.cost <= node.Capacity {
			kept += it.cost
			stays = append(stays, it)
		} else {
			moves = append(moves, it)
		}
	}
	return s.moveOff(ctx, tx, node, moves, stays, cause, actor)
}

// moveOff moves items off node from, within tx: Plan places them on the
// other eligible nodes of its kind (locked in id order), the rest become
// unplaced. stays is the node's work that does not move, for the Change.
// It writes one move event with the cause, and a capacity alert when
// something is left unplaced.
func (s *Service) moveOff(ctx context.Context, tx pgx.Tx, from *dbsqlc.Node, items, stays []liveItem, cause string, actor Actor) (MoveResult, error) {
	mr := MoveResult{To: map[string]int{}, Change: newChange()}
	for _, it := range stays {
		mr.Change.Stays = append(mr.Change.Stays, it.change())
	}
	if len(items) == 0 {
		return mr, nil
	}
	rows, err := s.q.NodeCandidatesForUpdate(ctx, tx, dbsqlc.NodeCandidatesForUpdateParams{Kind: from.Kind, ExcludeID: from.ID})
	if err != nil {
		return mr, err
	}
	cands, names := forUpdateCandidates(rows)
	plan := make([]PlanItem, len(items))
	for i, it := range items {
		plan[i] = PlanItem{Cost: it.cost}
	}
	dest := Plan(plan, cands)
	ids := make([]int64, len(items))
	touched := []int64{from.ID}
	for i, it := range items {
		ids[i] = it.id
		if dest[i] == 0 {
			mr.Unplaced++
			mr.Change.Unplaced = append(mr.Change.Unplaced, it.change())
			continue
		}
		name := names[dest[i]]
		if mr.To[name] == 0 {
			touched = append(touched, dest[i])
		}
		mr.Moved++
		mr.To[name]++
		mr.Change.Moves[name] = append(mr.Change.Moves[name], it.change())
	}
	if err := s.q.WorkMove(ctx, tx, dbsqlc.WorkMoveParams{Ids: ids, NodeIds: dest}); err != nil {
		return mr, fmt.Errorf("move work: %w", err)
	}
	if err := s.q.NodeRecountUsed(ctx, tx, touched); err != nil {
		return mr, err
	}
	if err := s.notify(ctx, tx, touched...); err != nil {
		return mr, err
	}
	wk := WorkKindFor(from.Kind)
	sev := "info"
	if mr.Unplaced > 0 {
		sev = "critical"
	}
	if !previewing(ctx) {
		countMoved(wk, cause, mr)
	}
	msg := fmt.Sprintf("Work moved off %s (%s): %s", from.Name, cause, mr.Summary(wk))
	if err := s.event(ctx, tx, from, "move", sev, actor.Name, msg); err != nil {
		return mr, err
	}
	if mr.Unplaced > 0 {
		if err := s.capacityAlert(ctx, tx, wk); err != nil {
			return mr, err
		}
	}
	return mr, nil
}

func forUpdateCandidates(rows []dbsqlc.NodeCandidatesForUpdateRow) ([]Candidate, map[int64]string) {
	cands := make([]Candidate, len(rows))
	names := make(map[int64]string, len(rows))
	for i, n := range rows {
		cands[i] = Candidate{ID: n.ID, Name: n.Name, Capacity: n.Capacity, Used: n.Used, Weight: n.Weight}
		names[n.ID] = n.Name
	}
	return cands, names
}

// capacityAlert queues one capacity alert per work kind at most every
// five minutes, so a burst of unplaced work is one email.
func (s *Service) capacityAlert(ctx context.Context, tx dbsqlc.DBTX, workKind string) error {
	n, err := s.q.AlertRecentOfType(ctx, tx, dbsqlc.AlertRecentOfTypeParams{Type: "capacity", NodeName: workKind, WindowSeconds: 300})
	if err != nil || n > 0 {
		return err
	}
	var unplaced int64
	counts, err := s.q.WorkCounts(ctx, tx)
	if err != nil {
		return err
	}
	for _, c := range counts {
		if c.Kind == workKind && c.State == WorkUnplaced {
			unplaced = c.N
		}
	}
	if unplaced == 0 {
		unplaced = 1
	}
	payload := fmt.Sprintf(`{"work_kind":%q,"unplaced":%d}`, workKind, unplaced)
	return s.q.AlertInsert(ctx, tx, dbsqlc.AlertInsertParams{Type: "capacity", NodeName: workKind, Payload: []byte(payload)})
}

// unplacedBatch bounds how much waiting work one PlaceUnplaced
// transaction considers.
const unplacedBatch = 50000

// PlaceUnplaced places waiting work of a kind on the eligible nodes, by
// Plan. It returns how many items it placed; errors are logged, as callers
// run it after their own change has committed.
func (s *Service) PlaceUnplaced(ctx context.Context, workKind, cause string) int {
	nodeKind, ok := NodeKindFor(workKind)
	if !ok {
		return 0
	}
	var placed int
	var touched []int64
	err := db.InTxRetry(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		placed, touched, err = s.placeUnplacedTx(ctx, tx, workKind, nodeKind, cause)
		return err
	})
	if err != nil {
		s.log.Error("place unplaced work", "kind", workKind, "err", err)
		return 0
	}
	s.notifyCommitted(ctx, touched...)
	countPlaced(workKind, WorkAssigned, "waiting", placed)
	return placed
}

// placeUnplacedTx is one attempt of PlaceUnplaced.
func (s *Service) placeUnplacedTx(ctx context.Context, tx pgx.Tx, workKind, nodeKind, cause string) (int, []int64, error) {
	rows, err := s.q.WorkUnplacedForKind(ctx, tx, dbsqlc.WorkUnplacedForKindParams{Kind: workKind, Lim: unplacedBatch})
	if err != nil || len(rows) == 0 {
		return 0, nil, err
	}
	crows, err := s.q.NodeCandidatesForUpdate(ctx, tx, dbsqlc.NodeCandidatesForUpdateParams{Kind: nodeKind, ExcludeID: 0})
	if err != nil {
		return 0, nil, err
	}
	cands, _ := forUpdateCandidates(crows)
	items := make([]PlanItem, len(rows))
	for i, r := range rows {
		// Avoid the nodes whose agent failed to start the item lately.
		items[i] = PlanItem{Cost: r.Cost, Exclude: r.Avoid}
	}
	var ids, to, touched []int64
	for i, d := range Plan(items, cands) {
		if d == 0 {
			continue
		}
		ids = append(ids, rows[i].ID)
		to = append(to, d)
		if !slices.Contains(touched, d) {
			touched = append(touched, d)
		}
	}
	if len(ids) == 0 {
		return 0, nil, nil
	}
	if err := s.q.WorkMove(ctx, tx, dbsqlc.WorkMoveParams{Ids: ids, NodeIds: to}); err != nil {
		return 0, nil, err
	}
	if err := s.q.NodeRecountUsed(ctx, tx, touched); err != nil {
		return 0, nil, err
	}
	msg := fmt.Sprintf("Placed %s that were waiting unplaced (%s); %d still waiting", WorkNoun(workKind, int64(len(ids))), cause, len(rows)-len(ids))
	if err := s.event(ctx, tx, nil, "placed", "info", "load-balancer", msg); err != nil {
		return 0, nil, err
	}
	return len(ids), touched, nil
}

// PlaceAllUnplaced retries every work kind that has waiting work.
func (s *Service) PlaceAllUnplaced(ctx context.Context, cause string) int {
	kinds, err := s.q.WorkUnplacedKinds(ctx, s.pool)
	if err != nil {
		s.log.Error("list unplaced kinds", "err", err)
		return 0
	}
	n := 0
	for _, k := range kinds {
		n += s.PlaceUnplaced(ctx, k, cause)
	}
	return n
}
