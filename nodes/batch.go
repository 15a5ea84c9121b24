package nodes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/callplane/callplane/db/dbsqlc"
)

// MaxBatch bounds the items of one batch placement and of one batch ack.
const MaxBatch = 1000

// batchAttempts bounds how often a batch placement plans again: when its
// plan no longer holds under the node locks, or a node lock was not
// granted in time.
const batchAttempts = 20

// BatchItemErrors maps the index of each invalid item of a batch to what is
// wrong with it. A batch with any invalid item writes nothing.
type BatchItemErrors map[int]string

func (e BatchItemErrors) Error() string {
	idx := make([]int, 0, len(e))
	for i := range e {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	parts := make([]string, 0, min(len(idx), 5))
	for _, i := range idx[:min(len(idx), 5)] {
		parts = append(parts, fmt.Sprintf("item %d: %s", i, e[i]))
	}
	more := ""
	if len(idx) > 5 {
		more = fmt.Sprintf("; and %d more", len(idx)-5)
	}
	noun := "items are"
	if len(idx) == 1 {
		noun = "item is"
	}
	return fmt.Sprintf("%d %s invalid: %s%s", len(idx), noun, strings.Join(parts, "; "), more)
}

// DuplicateRefsError names the refs of a batch that appear more than once
// in it or already exist. It wraps ErrConflict; the batch wrote nothing.
type DuplicateRefsError struct {
	Refs []string
}

func (e *DuplicateRefsError) Error() string {
	shown := e.Refs[:min(len(e.Refs), 20)]
	more := ""
	if len(e.Refs) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(e.Refs)-len(shown))
	}
	return fmt.Sprintf("work already exists or is repeated in the batch: %s%s", strings.Join(shown, ", "), more)
}

func (e *DuplicateRefsError) Unwrap() error { return ErrConflict }

// ValidateWorkBatch checks every item of a batch and the batch's size.
func ValidateWorkBatch(items []WorkInput) error {
	switch {
	case len(items) == 0:
		return FieldErrors{"items": "a batch needs at least one item"}
	case len(items) > MaxBatch:
		return FieldErrors{"items": fmt.Sprintf("a batch holds at most %d items", MaxBatch)}
	}
	bad := BatchItemErrors{}
	for i, in := range items {
		fe := ValidateWork(in)
		if len(fe) == 0 {
			continue
		}
		fields := make([]string, 0, len(fe))
		for f := range fe {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		msgs := make([]string, len(fields))
		for j, f := range fields {
			msgs[j] = fe[f]
		}
		bad[i] = strings.Join(msgs, "; ")
	}
	if len(bad) > 0 {
		return bad
	}
	seen := make(map[string]bool, len(items))
	var dups []string
	for _, in := range items {
		if seen[in.Ref] {
			if !slices.Contains(dups, in.Ref) {
				dups = append(dups, in.Ref)
			}
			continue
		}
		seen[in.Ref] = true
	}
	if len(dups) > 0 {
		return &DuplicateRefsError{Refs: dups}
	}
	return nil
}

// PlaceWorkBatch places many new work items in one transaction, set-based.
// It reads the eligible nodes of the batch's kinds once, spreads the items
// over them with spread (in proportion to free capacity, never above it;
// largest items first), then locks only the nodes it chose, once and in
// id order (batches of the same node kind take turns, on an advisory
// lock), and checks the plan against their latest state under the
// locks. All work rows go in with one statement, the used counters with
// one more, and one notification after the commit wakes every touched
// node. Items that fit nowhere are unplaced, with one event per work kind
// and a capacity alert, as in PlaceWork.
//
// Every item is validated first; an invalid item (BatchItemErrors) or a
// ref that repeats or already exists (DuplicateRefsError) fails the whole
// batch and writes nothing. The placements come back in input order.
//
// A plan that no longer holds under the locks (a node filled, was disabled
// or went down meanwhile), a node lock not granted within the batch's lock
// timeout, or a deadlock Postgres broke, rolls the transaction back and
// plans again, a bounded number of times.
func (s *Service) PlaceWorkBatch(ctx context.Context, actor Actor, items []WorkInput) ([]Placement, error) {
	if err := ValidateWorkBatch(items); err != nil {
		return nil, err
	}
	var nodeKinds []string
	for _, in := range items {
		nk, _ := NodeKindFor(in.Kind)
		if !slices.Contains(nodeKinds, nk) {
			nodeKinds = append(nodeKinds, nk)
		}
	}
	for attempt := 1; ; attempt++ {
		out, touched, err := s.placeBatchOnce(ctx, actor, items, nodeKinds, attempt)
		if err != nil && attempt < batchAttempts && (errors.Is(err, errRetry) || retryable(err)) {
			if !errors.Is(err, errRetry) {
				// Someone else holds what we need: let them finish.
				t := time.NewTimer(time.Duration(attempt) * time.Duration(1+rand.IntN(4)) * time.Millisecond)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, ctx.Err()
				case <-t.C:
				}
			}
			continue
		}
		if err != nil {
			if errors.Is(err, errRetry) || retryable(err) {
				return nil, fmt.Errorf("place batch of %d: nodes too busy after %d attempts: %w", len(items), attempt, err)
			}
			return nil, err
		}
		s.notifyCommitted(ctx, touched...)
		return out, nil
	}
}

func (s *Service) placeBatchOnce(ctx context.Context, actor Actor, items []WorkInput, nodeKinds []string, attempt int) ([]Placement, []int64, error) {
	out := make([]Placement, len(items))
	var touched []int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		touched = touched[:0]
		if err := s.q.WorkBatchSerialize(ctx, tx, nodeKinds); err != nil {
			return err
		}
		if err := s.q.WorkBatchLockTimeout(ctx, tx); err != nil {
			return err
		}
		eligible, err := s.q.WorkBatchEligibleNodes(ctx, tx, nodeKinds)
		if err != nil {
			return err
		}
		byKind := map[string][]*target{}
		names := map[int64]string{}
		for _, n := range eligible {
			names[n.ID] = n.Name
			if free := n.Capacity - n.Used; free > 0 {
				byKind[n.Kind] = append(byKind[n.Kind], &target{id: n.ID, name: n.Name, free: free})
			}
		}
		// Spread each node kind's items over its nodes, largest items
		// first so that big items are not left without room by small ones.
		dest := make([]int64, len(items))
		for _, nk := range nodeKinds {
			var idx []int
			for i, in := range items {
				if k, _ := NodeKindFor(in.Kind); k == nk {
					idx = append(idx, i)
				}
			}
			slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(items[b].Cost, items[a].Cost) })
			wi := make([]workItem, len(idx))
			for j, i := range idx {
				wi[j] = workItem{cost: int32(items[i].Cost)}
			}
			for j, d := range spread(wi, byKind[nk]) {
				dest[idx[j]] = d
			}
		}
		delta := map[int64]int32{}
		for i, in := range items {
			if dest[i] != 0 {
				delta[dest[i]] += int32(in.Cost)
			}
		}
		// Lock the chosen nodes and check the plan under the locks.
		if len(delta) > 0 {
			up := dbsqlc.WorkBatchAddUsedParams{Ids: make([]int64, 0, len(delta)), Deltas: make([]int32, 0, len(delta))}
			for id := range delta {
				up.Ids = append(up.Ids, id)
			}
			locked, err := s.q.WorkBatchLockTargets(ctx, tx, up.Ids)
			if err != nil {
				return err
			}
			if len(locked) != len(delta) {
				return errRetry // a node was removed meanwhile
			}
			up.Ids = up.Ids[:0]
			for _, n := range locked {
				if !n.Eligible || n.Used+delta[n.ID] > n.Capacity {
					return errRetry
				}
				up.Ids = append(up.Ids, n.ID)
				up.Deltas = append(up.Deltas, delta[n.ID])
			}
			if err := s.q.WorkBatchAddUsed(ctx, tx, up); err != nil {
				return err
			}
			touched = append(touched, up.Ids...)
		}
		p := dbsqlc.WorkInsertBatchParams{
			Refs: make([]string, len(items)), Kinds: make([]string, len(items)),
			Costs: make([]int32, len(items)), NodeIds: dest,
		}
		for i, in := range items {
			p.Refs[i], p.Kinds[i], p.Costs[i] = in.Ref, in.Kind, int32(in.Cost)
		}
		rows, err := s.q.WorkInsertBatch(ctx, tx, p)
		if err != nil {
			return err
		}
		if len(rows) != len(items) {
			// ON CONFLICT skipped refs that exist already: name them and
			// roll the whole batch back.
			got := make(map[string]bool, len(rows))
			for _, r := range rows {
				got[r.Ref] = true
			}
			var dups []string
			for _, in := range items {
				if !got[in.Ref] {
					dups = append(dups, in.Ref)
				}
			}
			return &DuplicateRefsError{Refs: dups}
		}
		byRef := make(map[string]dbsqlc.WorkInsertBatchRow, len(rows))
		for _, r := range rows {
			byRef[r.Ref] = r
		}
		unplaced := map[string][]int{} // work kind -> item indexes
		for i, in := range items {
			r := byRef[in.Ref]
			out[i] = Placement{ID: r.ID, Ref: in.Ref, Kind: in.Kind, Cost: int32(in.Cost), State: r.State,
				Node: names[dest[i]], Epoch: r.Epoch, Attempts: attempt}
			if dest[i] == 0 {
				unplaced[in.Kind] = append(unplaced[in.Kind], i)
			}
		}
		for _, wk := range WorkKinds {
			idx := unplaced[wk]
			if len(idx) == 0 {
				continue
			}
			nk, _ := NodeKindFor(wk)
			// As in PlaceWork: if room appeared since the plan was read
			// (work ended, a node came up), plan again rather than leave
			// work waiting needlessly.
			if attempt < batchAttempts-1 {
				now, err := s.q.WorkBatchEligibleNodes(ctx, tx, []string{nk})
				if err != nil {
					return err
				}
				if fitsSomewhere(items, idx, now) {
					return errRetry
				}
			}
			var cost int
			refs := make([]string, 0, min(len(idx), 10))
			for _, i := range idx {
				cost += items[i].Cost
				if len(refs) < 10 {
					refs = append(refs, items[i].Ref)
				}
			}
			list := strings.Join(refs, ", ")
			if len(idx) > len(refs) {
				list += fmt.Sprintf(" and %d more", len(idx)-len(refs))
			}
			msg := fmt.Sprintf("No %s node has room for %s of a batch of %d (cost %d): they wait unplaced: %s",
				nk, WorkNoun(wk, int64(len(idx))), len(items), cost, list)
			if err := s.event(ctx, tx, nil, "unplaced", "critical", actor.Name, msg); err != nil {
				return err
			}
			if err := s.capacityAlert(ctx, tx, wk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, touched, nil
}

// fitsSomewhere reports whether one of the unplaced items would fit on
// one of the nodes as they are now (this batch's own placements included).
func fitsSomewhere(items []WorkInput, idx []int, nodes []dbsqlc.WorkBatchEligibleNodesRow) bool {
	var most int32
	for _, n := range nodes {
		most = max(most, n.Capacity-n.Used)
	}
	for _, i := range idx {
		if int32(items[i].Cost) <= most {
			return true
		}
	}
	return false
}

// retryable reports an error after which Postgres rolled the transaction
// back and running it again may succeed: a node lock not granted within
// the batch's lock timeout, a deadlock Postgres broke, or a serialization
// failure.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// AckInput is one ack of a batch: an assignment, the epoch the agent saw
// and what it did with it.
type AckInput struct {
	ID    int64  `json:"id"`
	Epoch int64  `json:"epoch"`
	State string `json:"state"`
	// Error is why a start failed (state "failed"), as the agent saw it.
	Error string `json:"error,omitempty"`
}

// AckResult is the outcome of one ack of a batch: Err is nil when the ack
// was applied, else why it changed nothing (as the single Ack would say).
type AckResult struct {
	ID  int64
	Err error
}

// AckBatch records many acks of one node. Each is fenced like Ack, by its
// epoch and the node: a stale epoch or work not on the node changes
// nothing and yields its error in the result, without failing the others.
// All the acks are one UPDATE statement; when some are ended or failed,
// that statement and one recount of the node share a transaction, the
// node's long-polls are woken once after the commit, and waiting work of
// the failed items' kinds is placed, as with Ack. The error is for the
// batch as a whole (bad size, database failure).
func (s *Service) AckBatch(ctx context.Context, nodeID int64, acks []AckInput) ([]AckResult, error) {
	switch {
	case len(acks) == 0:
		return nil, FieldErrors{"acks": "a batch needs at least one ack"}
	case len(acks) > MaxBatch:
		return nil, FieldErrors{"acks": fmt.Sprintf("a batch holds at most %d acks", MaxBatch)}
	}
	res := make([]AckResult, len(acks))
	var p dbsqlc.WorkAckBatchParams
	p.NodeID = nodeID
	seen := make(map[int64]bool, len(acks))
	reasons := map[int64]string{}
	recount := false
	for i, a := range acks {
		res[i].ID = a.ID
		switch {
		case !slices.Contains([]string{WorkActive, "failed", WorkEnded}, a.State):
			res[i].Err = FieldErrors{"state": "state must be active, failed or ended"}
		case seen[a.ID]:
			res[i].Err = FieldErrors{"id": "assignment " + strconv.FormatInt(a.ID, 10) + " is acked twice in this batch"}
		default:
			seen[a.ID] = true
			p.Ids = append(p.Ids, a.ID)
			p.Epochs = append(p.Epochs, a.Epoch)
			p.States = append(p.States, a.State)
			if a.State == "failed" {
				reasons[a.ID] = a.Error
			}
			recount = recount || a.State != WorkActive
		}
	}
	if len(p.Ids) == 0 {
		return res, nil
	}
	var matched []dbsqlc.WorkAckBatchRow
	var refused map[int64]error
	apply := func(q dbsqlc.DBTX) error {
		var err error
		if matched, err = s.q.WorkAckBatch(ctx, q, p); err != nil {
			return err
		}
		if refused, err = s.ackBatchRefusals(ctx, q, nodeID, p, matched); err != nil {
			return err
		}
		recountNode := false
		for _, m := range matched {
			if m.AckedState == "failed" {
				if err := s.recordStartFailure(ctx, q, nodeID, m.ID, reasons[m.ID]); err != nil {
					return err
				}
			}
			recountNode = recountNode || m.AckedState != WorkActive
		}
		if recountNode {
			return s.q.NodeRecountUsed(ctx, q, []int64{nodeID})
		}
		return nil
	}
	var err error
	if recount {
		err = s.inTx(ctx, func(tx pgx.Tx) error { return apply(tx) })
	} else {
		// Only active acks: one statement is its own transaction, and
		// the node's load does not change.
		err = apply(s.pool)
	}
	if err != nil {
		return nil, err
	}
	for i := range res {
		if res[i].Err == nil {
			res[i].Err = refused[res[i].ID]
		}
	}
	// Failed work waits unplaced and ended work frees capacity: either way
	// waiting work of that kind may fit now.
	var freedKinds []string
	for _, m := range matched {
		if m.AckedState != WorkActive && !slices.Contains(freedKinds, m.Kind) {
			freedKinds = append(freedKinds, m.Kind)
		}
	}
	if len(freedKinds) > 0 {
		s.notifyCommitted(ctx, nodeID)
	}
	for _, k := range freedKinds {
		s.PlaceUnplaced(ctx, k, "capacity freed or work failed")
	}
	return res, nil
}

// ackBatchRefusals says, for each ack of p that matched nothing, why: one
// read of the current rows.
func (s *Service) ackBatchRefusals(ctx context.Context, q dbsqlc.DBTX, nodeID int64, p dbsqlc.WorkAckBatchParams, matched []dbsqlc.WorkAckBatchRow) (map[int64]error, error) {
	if len(matched) == len(p.Ids) {
		return nil, nil
	}
	ok := make(map[int64]bool, len(matched))
	for _, m := range matched {
		ok[m.ID] = true
	}
	var missing []int64
	epochs := map[int64]int64{}
	for i, id := range p.Ids {
		if !ok[id] {
			missing = append(missing, id)
			epochs[id] = p.Epochs[i]
		}
	}
	rows, err := s.q.WorkGetByIDs(ctx, q, missing)
	if err != nil {
		return nil, err
	}
	cur := make(map[int64]*workState, len(rows))
	for _, r := range rows {
		cur[r.ID] = &workState{Epoch: r.Epoch, NodeID: r.NodeID, State: r.State}
	}
	out := make(map[int64]error, len(missing))
	for _, id := range missing {
		out[id] = refusal(cur[id], nodeID, id, epochs[id])
	}
	return out, nil
}
