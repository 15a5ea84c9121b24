package nodes

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/agentproto"
	"github.com/callplane/callplane/nodes/problem"
)

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
	s.notifyPlaced(ctx, 0, nodeIDs)
}

// notifyPlaced is notifyCommitted for a placement group, whose
// notification also names the version it drew (",@version" after the
// ids; listeners that do not know it skip it as an id they cannot read).
func (s *Service) notifyPlaced(ctx context.Context, version int64, nodeIDs []int64) {
	payload := notifyPayload(nodeIDs)
	if payload == "" {
		return
	}
	if payload != "*" && version > 0 {
		payload += ",@" + strconv.FormatInt(version, 10)
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

// EndWork ends a work item; ending an already ended item is a no-op.
func (s *Service) EndWork(ctx context.Context, actor Actor, ref string) (Work, error) {
	w, err := s.endWork(ctx, actor, ref)
	return workFromRow(w), err
}

func (s *Service) endWork(ctx context.Context, actor Actor, ref string) (dbsqlc.Work, error) {
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

// Desired returns a node's desired set and its version, read by one
// statement so the two agree.
func (s *Service) Desired(ctx context.Context, nodeID int64) (agentproto.DesiredSet, error) {
	rows, err := s.q.WorkDesiredSetForNode(ctx, s.pool, nodeID)
	if err != nil {
		return agentproto.DesiredSet{}, err
	}
	if len(rows) == 0 {
		return agentproto.DesiredSet{}, fmt.Errorf("node %d: %w", nodeID, db.ErrNotFound)
	}
	ds := agentproto.DesiredSet{Version: rows[0].AssignVersion, Assignments: make([]agentproto.Assignment, 0, len(rows))}
	for _, r := range rows {
		if r.ID == nil {
			continue // the node has no live work
		}
		ds.Assignments = append(ds.Assignments, assignment(*r.ID, *r.Ref, *r.Kind, *r.Cost, *r.Epoch, *r.State, r.CallID, r.FromUri, r.ToUri))
	}
	return ds, nil
}

// DesiredSince returns what changed in a node's desired set since the
// version an agent has (a delta: added or changed items, and the ids of
// removed ones). It answers the whole set instead when since is 0, when
// the node asked its agent to take the whole set again after since
// (reconciliation, work that left the node), or when the node's version is
// below since (the agent's version came from another database, such as
// one restored from a backup). A change wakes the long-polls of many nodes
// at once: their reads go together in a few statements (groups, like
// placements).
func (s *Service) DesiredSince(ctx context.Context, nodeID, since int64) (agentproto.DesiredSet, error) {
	if since <= 0 {
		return s.Desired(ctx, nodeID)
	}
	o, err := s.deltas[nodeID%deltaReaders].do(ctx, deltaReq{nodeID: nodeID, since: since})
	if err == nil {
		err = o.err
	}
	if err == nil && o.whole {
		return s.Desired(ctx, nodeID)
	}
	return o.ds, err
}

type deltaReq struct{ nodeID, since int64 }

// deltaReaders is how many groups of delta reads may run at once (each
// node's reads always go to the same one): enough to keep a few cores
// busy while the next groups gather.
const deltaReaders = 2

// deltaLimit bounds the changes a delta carries; a node with more gets the
// whole set.
const deltaLimit = 2000

type deltaOutcome struct {
	ds    agentproto.DesiredSet
	whole bool // the agent must take the whole set
	err   error
}

func newDeltaReader(s *Service) *groupCommit[deltaReq, deltaOutcome] {
	return &groupCommit[deltaReq, deltaOutcome]{maxItems: 1000, size: func(deltaReq) int { return 1 }, run: s.readDeltas}
}

// readDeltas reads the deltas of a group of long-polls in one statement.
func (s *Service) readDeltas(ctx context.Context, group []deltaReq) []deltaOutcome {
	out := make([]deltaOutcome, len(group))
	p := dbsqlc.WorkDesiredDeltasParams{NodeIds: make([]int64, len(group)), Sinces: make([]int64, len(group)), Lim: deltaLimit}
	for i, r := range group {
		p.NodeIds[i], p.Sinces[i] = r.nodeID, r.since
	}
	rows, err := s.q.WorkDesiredDeltas(ctx, s.pool, p)
	if err != nil {
		for i := range out {
			out[i].err = err
		}
		return out
	}
	byNode := make(map[int64][]dbsqlc.WorkDesiredDeltasRow, len(group))
	for _, r := range rows {
		byNode[r.ForNode] = append(byNode[r.ForNode], r)
	}
	for i, r := range group {
		out[i] = deltaFromRows(r, byNode[r.nodeID])
	}
	return out
}

// deltaFromRows is one node's delta, from its rows of WorkDesiredDeltas.
func deltaFromRows(r deltaReq, rows []dbsqlc.WorkDesiredDeltasRow) deltaOutcome {
	if len(rows) == 0 {
		return deltaOutcome{err: fmt.Errorf("node %d: %w", r.nodeID, db.ErrNotFound)}
	}
	if r.since < rows[0].ResyncVersion || rows[0].AssignVersion < r.since {
		return deltaOutcome{whole: true}
	}
	if len(rows) >= deltaLimit {
		return deltaOutcome{whole: true} // so much changed that the whole set is smaller
	}
	ds := agentproto.DesiredSet{Version: rows[0].AssignVersion, Delta: true, Assignments: []agentproto.Assignment{}}
	slices.SortFunc(rows, func(a, b dbsqlc.WorkDesiredDeltasRow) int { return cmp.Compare(a.ID, b.ID) })
	for i, w := range rows {
		switch {
		case w.ID == 0:
			// nothing changed
		case i > 0 && rows[i-1].ID == w.ID:
			// changed more than once: one row is enough
		case w.NodeID != nil && *w.NodeID == r.nodeID && (w.State == WorkAssigned || w.State == WorkActive):
			ds.Assignments = append(ds.Assignments, assignment(w.ID, w.Ref, w.Kind, w.Cost, w.Epoch, w.State, w.CallID, w.FromUri, w.ToUri))
		default:
			ds.Removed = append(ds.Removed, w.ID)
		}
	}
	return deltaOutcome{ds: ds}
}

// assignment is one item of a delivery, from a work row and its call.
func assignment(id int64, ref, kind string, cost int32, epoch int64, state string, callID, from, to *string) agentproto.Assignment {
	a := agentproto.Assignment{ID: id, Ref: ref, Kind: kind, Cost: cost, Epoch: epoch, State: state}
	if callID != nil {
		a.CallID, a.From, a.To = *callID, *from, *to
	}
	return a
}

// Version returns a node's assignment version.
func (s *Service) Version(ctx context.Context, nodeID int64) (int64, error) {
	v, err := s.q.NodeVersion(ctx, s.pool, nodeID)
	return v.AssignVersion, db.Translate(err)
}

// Ack records what an agent did with an assignment. An ack with a stale
// epoch, or for work not on the node, changes nothing. A failed start
// (state "failed", with the agent's reason in in.Error) makes the item
// wait unplaced, keeps it off this node and places it elsewhere.
func (s *Service) Ack(ctx context.Context, nodeID int64, in agentproto.Ack) error {
	workID, epoch, state := in.ID, in.Epoch, in.State
	if !slices.Contains([]string{WorkActive, "failed", WorkEnded}, state) {
		return problem.FieldErrors{"state": "state must be active, failed or ended"}
	}
	if state == WorkActive {
		// The common ack, one per assignment: the node's load does not
		// change, nothing to recount, and it is committed with the
		// active acks of other nodes that arrive meanwhile.
		errs, err := s.ackActive(ctx, nodeID, []int64{workID}, []int64{epoch})
		if err != nil {
			return err
		}
		return errs[0]
	}
	p := dbsqlc.WorkAckParams{State: state, ID: workID, NodeID: &nodeID, Epoch: epoch}
	var w dbsqlc.Work
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		w, err = s.q.WorkAck(ctx, tx, p)
		if err != nil {
			if !db.IsNotFound(err) {
				return err
			}
			return s.ackRefused(ctx, tx, nodeID, workID, epoch)
		}
		if state == "failed" {
			if err := s.recordStartFailure(ctx, tx, nodeID, workID, in.Error); err != nil {
				return err
			}
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
	return err
}

// ackRefused says why an ack matched no live assignment of the node.
func (s *Service) ackRefused(ctx context.Context, q dbsqlc.DBTX, nodeID, workID, epoch int64) error {
	cur, err := s.q.WorkGetByID(ctx, q, workID)
	switch {
	case db.IsNotFound(err):
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

// workFilterNode checks a work filter's kind and state (problem.FieldErrors) and
// resolves its node name to an id (0 for none; ErrNotFound if unknown).
func (s *Service) workFilterNode(ctx context.Context, f WorkFilter) (int64, error) {
	var nodeID int64
	if f.Node != "" {
		n, err := s.GetNode(ctx, f.Node)
		if err != nil {
			return 0, err
		}
		nodeID = n.ID
	}
	if f.Kind != "" && !slices.Contains(WorkKinds, f.Kind) {
		return 0, problem.FieldErrors{"kind": "kind must be one of " + strings.Join(WorkKinds, ", ")}
	}
	if f.State != "" && !slices.Contains(WorkStates, f.State) {
		return 0, problem.FieldErrors{"state": "state must be one of " + strings.Join(WorkStates, ", ")}
	}
	return nodeID, nil
}

// ListWork lists work items; an unknown node name is ErrNotFound.
func (s *Service) ListWork(ctx context.Context, f WorkFilter) ([]Work, error) {
	nodeID, err := s.workFilterNode(ctx, f)
	if err != nil {
		return nil, err
	}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 200
	}
	rows, err := s.q.WorkList(ctx, s.pool, dbsqlc.WorkListParams{NodeID: nodeID, Kind: f.Kind, State: f.State, Q: f.Q, Lim: f.Limit})
	if err != nil {
		return nil, err
	}
	return fromRows(rows, workFromJoined), nil
}

// GetWork returns one work item by ref.
func (s *Service) GetWork(ctx context.Context, ref string) (Work, error) {
	w, err := s.q.WorkGetByRef(ctx, s.pool, ref)
	if err != nil {
		return Work{}, db.Translate(err)
	}
	return workFromJoined(w), nil
}
