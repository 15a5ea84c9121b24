package nodes

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/problem"
)

// MaxBatch bounds the items of one batch placement.
const MaxBatch = 1000

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

// Is makes BatchItemErrors of kind problem.ErrInvalid.
func (e BatchItemErrors) Is(target error) bool { return target == problem.ErrInvalid }

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
		return problem.FieldErrors{"items": "a batch needs at least one item"}
	case len(items) > MaxBatch:
		return problem.FieldErrors{"items": fmt.Sprintf("a batch holds at most %d items", MaxBatch)}
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
func (s *Service) AckBatch(ctx context.Context, nodeID int64, acks []agentproto.Ack) ([]AckResult, error) {
	switch {
	case len(acks) == 0:
		return nil, problem.FieldErrors{"acks": "a batch needs at least one ack"}
	case len(acks) > agentproto.MaxAckBatch:
		return nil, problem.FieldErrors{"acks": fmt.Sprintf("a batch holds at most %d acks", agentproto.MaxAckBatch)}
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
			res[i].Err = problem.FieldErrors{"state": "state must be active, failed or ended"}
		case seen[a.ID]:
			res[i].Err = problem.FieldErrors{"id": "assignment " + strconv.FormatInt(a.ID, 10) + " is acked twice in this batch"}
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
	if !recount {
		// Only active acks: the node's load does not change, and they
		// are committed with the active acks of other nodes.
		errs, err := s.ackActive(ctx, nodeID, p.Ids, p.Epochs)
		if err != nil {
			return nil, err
		}
		k := 0
		for i := range res {
			if res[i].Err == nil {
				res[i].Err = errs[k]
				k++
			}
		}
		return res, nil
	}
	if err := s.inTx(ctx, func(tx pgx.Tx) error { return apply(tx) }); err != nil {
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

// nodeAcks are active acks of one node: assignment ids and the epochs the
// agent saw.
type nodeAcks struct {
	nodeID int64
	ids    []int64
	epochs []int64
}

// ackOutcome is what became of one nodeAcks: an error per ack (nil when
// applied), or err for them all.
type ackOutcome struct {
	errs []error
	err  error
}

// newAcker returns the group commit of active acks: the acks of many
// agents, arriving at once, go in one statement and one WAL flush.
func newAcker(s *Service) *groupCommit[nodeAcks, ackOutcome] {
	return &groupCommit[nodeAcks, ackOutcome]{
		maxItems: 4 * agentproto.MaxAckBatch,
		size:     func(a nodeAcks) int { return len(a.ids) },
		run:      s.ackActiveGroup,
	}
}

// ackActive records active acks of one node, committed with those of
// other nodes that arrive meanwhile. Each is fenced like Ack; a refused
// one gets the error Ack would answer.
func (s *Service) ackActive(ctx context.Context, nodeID int64, ids, epochs []int64) ([]error, error) {
	o, err := s.acker.do(ctx, nodeAcks{nodeID: nodeID, ids: ids, epochs: epochs})
	if err == nil {
		err = o.err
	}
	return o.errs, err
}

// ackActiveGroup applies the active acks of a group in one statement and
// says, for each that matched nothing, why (one read of those rows).
func (s *Service) ackActiveGroup(ctx context.Context, group []nodeAcks) []ackOutcome {
	var p dbsqlc.WorkAckActiveParams
	for _, a := range group {
		p.Ids = append(p.Ids, a.ids...)
		p.Epochs = append(p.Epochs, a.epochs...)
		for range a.ids {
			p.NodeIds = append(p.NodeIds, a.nodeID)
		}
	}
	out := make([]ackOutcome, len(group))
	fail := func(err error) []ackOutcome {
		for i := range out {
			out[i].err = err
		}
		return out
	}
	// One statement, its own transaction; the items of many nodes may
	// meet another writer's locks in another order, so a deadlock runs it
	// again (it is idempotent: setting active what is active changes
	// nothing the fence looks at).
	var matched []dbsqlc.WorkAckActiveRow
	err := db.Retry(ctx, func(int) error {
		var err error
		matched, err = s.q.WorkAckActive(ctx, s.pool, p)
		return err
	})
	if err != nil {
		return fail(err)
	}
	type key struct{ id, node, epoch int64 }
	ok := make(map[key]bool, len(matched))
	for _, m := range matched {
		ok[key{m.ID, m.NodeID, m.Epoch}] = true
	}
	var missing []int64
	for i, id := range p.Ids {
		if !ok[key{id, p.NodeIds[i], p.Epochs[i]}] {
			missing = append(missing, id)
		}
	}
	cur := map[int64]*workState{}
	if len(missing) > 0 {
		rows, err := s.q.WorkGetByIDs(ctx, s.pool, missing)
		if err != nil {
			return fail(err)
		}
		for _, r := range rows {
			cur[r.ID] = &workState{Epoch: r.Epoch, NodeID: r.NodeID, State: r.State}
		}
	}
	for i, a := range group {
		out[i].errs = make([]error, len(a.ids))
		for j, id := range a.ids {
			if !ok[key{id, a.nodeID, a.epochs[j]}] {
				out[i].errs[j] = refusal(cur[id], a.nodeID, id, a.epochs[j])
			}
		}
	}
	return out
}
