package nodes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
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
}

// Placement is where a work item went.
type Placement struct {
	ID       int64  `json:"id"`
	Ref      string `json:"ref"`
	Kind     string `json:"kind"`
	Cost     int32  `json:"cost"`
	State    string `json:"state"`
	Node     string `json:"node,omitempty"`
	Epoch    int64  `json:"epoch"`
	Attempts int    `json:"-"`
}

// MoveResult counts what a move did.
type MoveResult struct {
	Moved    int
	Unplaced int
	To       map[string]int // node name -> items received
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

type workItem struct {
	id   int64
	cost int32
}

type target struct {
	id       int64
	name     string
	free     int32
	quota    float64
	assigned int32
}

// spread assigns items to targets in proportion to each target's free
// capacity, never above it. It returns the target id per item (0 when the
// item fits nowhere).
func spread(items []workItem, targets []*target) []int64 {
	var total, free int64
	for _, it := range items {
		total += int64(it.cost)
	}
	for _, t := range targets {
		free += int64(t.free)
	}
	share := 1.0
	if free > 0 && total < free {
		share = float64(total) / float64(free)
	}
	for _, t := range targets {
		t.quota = float64(t.free) * share
	}
	out := make([]int64, len(items))
	for i, it := range items {
		var best *target
		bestRoom := 0.0
		for _, t := range targets {
			if t.assigned+it.cost > t.free {
				continue
			}
			room := t.quota - float64(t.assigned)
			if best == nil || room > bestRoom {
				best, bestRoom = t, room
			}
		}
		if best != nil {
			best.assigned += it.cost
			out[i] = best.id
		}
	}
	return out
}

// MoveAway moves all live work off node within tx, spread over the other
// enabled, up nodes of its kind; what fits nowhere becomes unplaced. It is
// set-based: one read, one update, one recount, one notification.
func (s *Service) MoveAway(ctx context.Context, tx pgx.Tx, node *dbsqlc.Node, cause string, actor Actor) (MoveResult, error) {
	rows, err := s.q.WorkLiveOnNode(ctx, tx, &node.ID)
	if err != nil {
		return MoveResult{}, err
	}
	items := make([]workItem, len(rows))
	for i, r := range rows {
		items[i] = workItem{id: r.ID, cost: r.Cost}
	}
	return s.moveItems(ctx, tx, node, items, cause, actor)
}

func (s *Service) moveItems(ctx context.Context, tx pgx.Tx, from *dbsqlc.Node, items []workItem, cause string, actor Actor) (MoveResult, error) {
	mr := MoveResult{To: map[string]int{}}
	if len(items) == 0 {
		return mr, nil
	}
	kind := from.Kind
	cands, err := s.q.NodeEligibleForUpdate(ctx, tx, dbsqlc.NodeEligibleForUpdateParams{Kind: kind, ExcludeID: from.ID})
	if err != nil {
		return mr, err
	}
	targets := make([]*target, 0, len(cands))
	for _, c := range cands {
		if free := c.Capacity - c.Used; free > 0 {
			targets = append(targets, &target{id: c.ID, name: c.Name, free: free})
		}
	}
	dest := spread(items, targets)
	ids := make([]int64, len(items))
	touched := []int64{from.ID}
	names := map[int64]string{}
	for _, t := range targets {
		names[t.id] = t.name
		if t.assigned > 0 {
			touched = append(touched, t.id)
		}
	}
	for i, it := range items {
		ids[i] = it.id
		if dest[i] == 0 {
			mr.Unplaced++
		} else {
			mr.Moved++
			mr.To[names[dest[i]]]++
		}
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
	wk := WorkKindFor(kind)
	sev := "info"
	if mr.Unplaced > 0 {
		sev = "critical"
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

// ValidateWork checks a work request.
func ValidateWork(in WorkInput) FieldErrors {
	fe := FieldErrors{}
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

// PlaceWork places a new work item on the least-loaded eligible node, or
// records it unplaced when none has room. Concurrent placements never
// overfill a node: the chosen node's row is locked and its used counter
// checked in the same statement.
func (s *Service) PlaceWork(ctx context.Context, actor Actor, in WorkInput) (Placement, error) {
	if fe := ValidateWork(in); len(fe) > 0 {
		return Placement{}, fe
	}
	nodeKind, _ := NodeKindFor(in.Kind)
	var p Placement
	for attempt := 1; ; attempt++ {
		retry := false
		var placedOn int64
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			row, err := s.q.WorkPlace(ctx, tx, dbsqlc.WorkPlaceParams{Ref: in.Ref, Kind: in.Kind, Cost: int32(in.Cost), NodeKind: nodeKind})
			if err != nil {
				if errors.Is(db.Translate(err), db.ErrConflict) {
					return fmt.Errorf("work %q: %w", in.Ref, ErrConflict)
				}
				return err
			}
			p = Placement{ID: row.ID, Ref: row.Ref, Kind: row.Kind, Cost: row.Cost, State: row.State, Node: row.NodeName, Epoch: row.Epoch, Attempts: attempt}
			if row.NodeID != nil {
				placedOn = *row.NodeID
				return nil
			}
			// Under contention the node we would have taken may have
			// filled between the plan and the lock; if any node still has
			// room, try again rather than leave the work unplaced.
			if attempt < 20 {
				room, err := s.q.NodeRoomForKind(ctx, tx, dbsqlc.NodeRoomForKindParams{Kind: nodeKind, ExcludeID: 0})
				if err != nil {
					return err
				}
				if room.Free >= int64(in.Cost) {
					retry = true
					return errRetry
				}
			}
			if err := s.event(ctx, tx, nil, "unplaced", "critical", actor.Name,
				fmt.Sprintf("No %s node has room for %s %s (cost %d): it waits unplaced", nodeKind, in.Kind, in.Ref, in.Cost)); err != nil {
				return err
			}
			return s.capacityAlert(ctx, tx, in.Kind)
		})
		if retry {
			continue
		}
		if err != nil && attempt < 20 && retryable(err) {
			// Postgres broke a deadlock (this placement may wait for one
			// node while holding another its SKIP LOCKED scan locked) and
			// rolled the transaction back: place it again.
			continue
		}
		if err == nil && placedOn != 0 {
			s.notifyCommitted(ctx, placedOn)
		}
		return p, err
	}
}

// notifyCommitted wakes the long-polls of a node whose assignments a
// committed transaction changed, with NotifyAsync: one notification in a
// transaction of its own that does not wait for a WAL flush. The hot
// per-item paths (placing, ending and acking one item) use it rather than
// notifying inside their own transaction, because Postgres serializes
// notifying commits, WAL flush included, on one lock: that capped
// placement at a few hundred a second. Moves still notify inside their
// transaction; they are rare and large. Batches notify here too, once for
// all the nodes they touched. Should this process die between
// the commit and the notification, the agent's long-poll answers at its
// wait (at most a minute) and sees the change then: nothing is lost.
func (s *Service) notifyCommitted(ctx context.Context, nodeIDs ...int64) {
	payload := notifyPayload(nodeIDs)
	if payload == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.q.NotifyAsync(ctx, s.pool, dbsqlc.NotifyAsyncParams{Channel: AssignChannel, Payload: payload})
	if err != nil {
		s.log.Error("notify assignment change", "node_ids", payload, "err", err)
	}
}

// notifyPayload is the payload of one assignment notification for the
// given nodes, as Service.notify builds it: their ids, comma-separated and
// without duplicates, or "*" (all nodes) when the list would not fit.
func notifyPayload(nodeIDs []int64) string {
	seen := make(map[int64]bool, len(nodeIDs))
	parts := make([]string, 0, len(nodeIDs))
	for _, id := range nodeIDs {
		if id == 0 || seen[id] {
			continue
		}
		seen[id] = true
		parts = append(parts, strconv.FormatInt(id, 10))
	}
	payload := strings.Join(parts, ",")
	if len(payload) > 7000 {
		payload = "*"
	}
	return payload
}

var errRetry = errors.New("retry placement")

// EndWork ends a work item; ending an already ended item is a no-op.
func (s *Service) EndWork(ctx context.Context, actor Actor, ref string) (dbsqlc.Work, error) {
	var w dbsqlc.Work
	var endedOn int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		w, err = s.q.WorkGetForUpdate(ctx, tx, ref)
		if err != nil {
			return fmt.Errorf("work %q: %w", ref, db.Translate(err))
		}
		if w.State == WorkEnded {
			return nil
		}
		if w, err = s.q.WorkEnd(ctx, tx, w.ID); err != nil {
			return err
		}
		if w.NodeID != nil {
			endedOn = *w.NodeID
			return s.q.NodeRecountUsed(ctx, tx, []int64{*w.NodeID})
		}
		return nil
	})
	if err == nil && endedOn != 0 {
		s.notifyCommitted(ctx, endedOn)
	}
	if err == nil && w.NodeID != nil {
		s.PlaceUnplaced(ctx, w.Kind, "capacity freed")
	}
	return w, err
}

// PlaceUnplaced places waiting work of a kind on nodes with room. It
// returns how many items it placed; errors are logged, as callers run it
// after their own change has committed.
func (s *Service) PlaceUnplaced(ctx context.Context, workKind, cause string) int {
	nodeKind, ok := NodeKindFor(workKind)
	if !ok {
		return 0
	}
	placed := 0
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		placed = 0
		if err = s.placeUnplacedOnce(ctx, workKind, nodeKind, cause, &placed); err == nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		s.log.Error("place unplaced work", "kind", workKind, "err", err)
		return 0
	}
	return placed
}

// placeUnplacedOnce is one transaction of PlaceUnplaced.
func (s *Service) placeUnplacedOnce(ctx context.Context, workKind, nodeKind, cause string, placedOut *int) error {
	placed := 0
	defer func() { *placedOut = placed }()
	return s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := s.q.WorkUnplacedForKind(ctx, tx, dbsqlc.WorkUnplacedForKindParams{Kind: workKind, Lim: 50000})
		if err != nil || len(rows) == 0 {
			return err
		}
		cands, err := s.q.NodeEligibleForUpdate(ctx, tx, dbsqlc.NodeEligibleForUpdateParams{Kind: nodeKind, ExcludeID: 0})
		if err != nil {
			return err
		}
		targets := make([]*target, 0, len(cands))
		for _, c := range cands {
			if free := c.Capacity - c.Used; free > 0 {
				targets = append(targets, &target{id: c.ID, name: c.Name, free: free})
			}
		}
		items := make([]workItem, len(rows))
		for i, r := range rows {
			items[i] = workItem{id: r.ID, cost: r.Cost}
		}
		dest := spread(items, targets)
		var ids, to []int64
		for i, d := range dest {
			if d != 0 {
				ids = append(ids, items[i].id)
				to = append(to, d)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		placed = len(ids)
		if err := s.q.WorkMove(ctx, tx, dbsqlc.WorkMoveParams{Ids: ids, NodeIds: to}); err != nil {
			return err
		}
		var touched []int64
		for _, t := range targets {
			if t.assigned > 0 {
				touched = append(touched, t.id)
			}
		}
		if err := s.q.NodeRecountUsed(ctx, tx, touched); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, touched...); err != nil {
			return err
		}
		msg := fmt.Sprintf("Placed %s that were waiting unplaced (%s); %d still waiting", WorkNoun(workKind, int64(placed)), cause, len(rows)-placed)
		return s.event(ctx, tx, nil, "placed", "info", "load-balancer", msg)
	})
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

// Assignment is one item of a node's desired set, as the agent sees it.
type Assignment struct {
	ID    int64  `json:"id"`
	Ref   string `json:"ref"`
	Kind  string `json:"kind"`
	Cost  int32  `json:"cost"`
	Epoch int64  `json:"epoch"`
	State string `json:"state"`
}

// DesiredSet is the full set of work a node should run, at a version.
type DesiredSet struct {
	Version     int64        `json:"version"`
	Assignments []Assignment `json:"assignments"`
}

// Desired returns a node's desired set and its version, read by one
// statement so the two agree.
func (s *Service) Desired(ctx context.Context, nodeID int64) (DesiredSet, error) {
	rows, err := s.q.WorkDesiredSetForNode(ctx, s.pool, nodeID)
	if err != nil {
		return DesiredSet{}, err
	}
	if len(rows) == 0 {
		return DesiredSet{}, db.Translate(pgx.ErrNoRows)
	}
	ds := DesiredSet{Version: rows[0].AssignVersion, Assignments: make([]Assignment, 0, len(rows))}
	for _, r := range rows {
		if r.ID == nil {
			continue // the node has no live work
		}
		ds.Assignments = append(ds.Assignments, Assignment{ID: *r.ID, Ref: *r.Ref, Kind: *r.Kind, Cost: *r.Cost, Epoch: *r.Epoch, State: *r.State})
	}
	return ds, nil
}

// Version returns a node's assignment version.
func (s *Service) Version(ctx context.Context, nodeID int64) (int64, error) {
	v, err := s.q.NodeVersion(ctx, s.pool, nodeID)
	return v.AssignVersion, db.Translate(err)
}

// Ack records what an agent did with an assignment. An ack with a stale
// epoch, or for work not on the node, changes nothing.
func (s *Service) Ack(ctx context.Context, nodeID, workID, epoch int64, state string) (dbsqlc.Work, error) {
	if !slices.Contains([]string{WorkActive, "failed", WorkEnded}, state) {
		return dbsqlc.Work{}, FieldErrors{"state": "state must be active, failed or ended"}
	}
	p := dbsqlc.WorkAckParams{State: state, ID: workID, NodeID: &nodeID, Epoch: epoch}
	if state == WorkActive {
		// The common ack, one per assignment: a single conditional UPDATE
		// is its own transaction, so it needs no BEGIN and COMMIT round
		// trips (the node's load does not change, nothing to recount).
		w, err := s.q.WorkAck(ctx, s.pool, p)
		if errors.Is(err, pgx.ErrNoRows) {
			return w, s.ackRefused(ctx, s.pool, nodeID, workID, epoch)
		}
		return w, err
	}
	var w dbsqlc.Work
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		w, err = s.q.WorkAck(ctx, tx, p)
		if err != nil {
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return s.ackRefused(ctx, tx, nodeID, workID, epoch)
		}
		return s.q.NodeRecountUsed(ctx, tx, []int64{nodeID})
	})
	if err == nil {
		s.notifyCommitted(ctx, nodeID)
	}
	switch {
	case err == nil && state == "failed":
		s.PlaceUnplaced(ctx, w.Kind, "agent reported failure")
	case err == nil && state == WorkEnded:
		s.PlaceUnplaced(ctx, w.Kind, "capacity freed")
	}
	return w, err
}

// ackRefused says why an ack matched no live assignment of the node.
func (s *Service) ackRefused(ctx context.Context, q dbsqlc.DBTX, nodeID, workID, epoch int64) error {
	cur, err := s.q.WorkGetByID(ctx, q, workID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return refusal(nil, nodeID, workID, epoch)
	case err != nil:
		return err
	}
	return refusal(&workState{Epoch: cur.Epoch, NodeID: cur.NodeID, State: cur.State}, nodeID, workID, epoch)
}

// workState is what an ack refusal is judged on.
type workState struct {
	Epoch  int64
	NodeID *int64
	State  string
}

// refusal says why an ack matched no live assignment of the node, given the
// work's current row (nil: no such work).
func refusal(cur *workState, nodeID, workID, epoch int64) error {
	switch {
	case cur == nil:
		return fmt.Errorf("assignment %d: %w", workID, ErrNotFound)
	case cur.Epoch != epoch:
		return fmt.Errorf("assignment %d: %w", workID, ErrStaleEpoch)
	case cur.NodeID == nil || *cur.NodeID != nodeID:
		return fmt.Errorf("assignment %d is not on this node: %w", workID, ErrNotFound)
	default:
		return fmt.Errorf("assignment %d is %s: %w", workID, cur.State, ErrStaleEpoch)
	}
}

// WorkFilter selects work for lists.
type WorkFilter struct {
	Node  string
	Kind  string
	State string
	Q     string
	Limit int32
}

// ListWork lists work items; an unknown node name is ErrNotFound.
func (s *Service) ListWork(ctx context.Context, f WorkFilter) ([]dbsqlc.WorkListRow, error) {
	var nodeID int64
	if f.Node != "" {
		n, err := s.GetNode(ctx, f.Node)
		if err != nil {
			return nil, err
		}
		nodeID = n.ID
	}
	if f.Kind != "" && !slices.Contains(WorkKinds, f.Kind) {
		return nil, FieldErrors{"kind": "kind must be one of " + strings.Join(WorkKinds, ", ")}
	}
	if f.State != "" && !slices.Contains(WorkStates, f.State) {
		return nil, FieldErrors{"state": "state must be one of " + strings.Join(WorkStates, ", ")}
	}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 200
	}
	return s.q.WorkList(ctx, s.pool, dbsqlc.WorkListParams{NodeID: nodeID, Kind: f.Kind, State: f.State, Q: f.Q, Lim: f.Limit})
}

// GetWork returns one work item by ref.
func (s *Service) GetWork(ctx context.Context, ref string) (dbsqlc.WorkGetByRefRow, error) {
	w, err := s.q.WorkGetByRef(ctx, s.pool, ref)
	return w, db.Translate(err)
}
