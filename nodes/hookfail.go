package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/safetext"
)

// AlertHook is the outbox type of a start hook failure alert.
const AlertHook = "hook"

// HookAlertWindow: at most one hook failure alert per node in this window,
// so a broken hook that fails every item is one email.
const HookAlertWindow = 10 * time.Minute

// HookAvoidFor is how long an item whose start failed on a node is kept
// off that node (see WorkUnplacedForKind).
const HookAvoidFor = time.Hour

// maxFailureText bounds a failure reason an agent reports.
const maxFailureText = 500

// HookPayload is the payload of a start hook failure alert.
type HookPayload struct {
	Node     string    `json:"node"`
	Kind     string    `json:"kind"`
	Ref      string    `json:"ref"`
	WorkKind string    `json:"work_kind"`
	Error    string    `json:"error"`
	Failures int32     `json:"failures"`
	At       time.Time `json:"at"`
}

// cleanReason makes an agent's failure reason safe to store and show: one
// line of text without control characters, bounded.
func cleanReason(s string) string {
	s = strings.Join(strings.Fields(safetext.Sanitize(s, maxFailureText)), " ")
	if s == "" {
		return "the agent reported that the start failed, without a reason"
	}
	return s
}

// recordStartFailure notes, in the ack's transaction, that the agent of
// nodeID could not start work item workID (its start hook failed after the
// agent's own retries): the item remembers the error and avoids the node
// for HookAvoidFor, the node shows the error, and the first failure on the
// node within HookAlertWindow queues one alert.
func (s *Service) recordStartFailure(ctx context.Context, tx dbsqlc.DBTX, nodeID, workID int64, reason string) error {
	reason = cleanReason(reason)
	n, err := s.q.NodeGet(ctx, tx, nodeID)
	if err != nil {
		return err
	}
	w, err := s.q.WorkGetByID(ctx, tx, workID)
	if err != nil {
		return err
	}
	failures, err := s.q.WorkFailureRecord(ctx, tx, dbsqlc.WorkFailureRecordParams{WorkID: workID, NodeID: nodeID, LastError: reason})
	if err != nil {
		return fmt.Errorf("record start failure: %w", err)
	}
	if err := s.q.WorkSetLastError(ctx, tx, dbsqlc.WorkSetLastErrorParams{ID: workID, LastError: "start failed on " + n.Name + ": " + reason}); err != nil {
		return err
	}
	if err := s.q.NodeSetHookError(ctx, tx, dbsqlc.NodeSetHookErrorParams{ID: nodeID, LastHookError: w.Ref + ": " + reason}); err != nil {
		return err
	}
	msg := fmt.Sprintf("Start of %s %s failed on %s: %s; it goes to another node if one has room and stays off %s for %s",
		w.Kind, w.Ref, n.Name, reason, n.Name, HookAvoidFor)
	if err := s.event(ctx, tx, &n, "work", "warning", "node:"+n.Name, msg); err != nil {
		return err
	}
	recent, err := s.q.AlertRecentOfType(ctx, tx, dbsqlc.AlertRecentOfTypeParams{Type: AlertHook, NodeName: n.Name, WindowSeconds: HookAlertWindow.Seconds()})
	if err != nil || recent > 0 {
		return err
	}
	body, err := json.Marshal(HookPayload{Node: n.Name, Kind: n.Kind, Ref: w.Ref, WorkKind: w.Kind, Error: reason, Failures: failures, At: time.Now()})
	if err != nil {
		return err
	}
	return s.q.AlertInsert(ctx, tx, dbsqlc.AlertInsertParams{Type: AlertHook, NodeName: n.Name, Payload: body})
}

// StartFailures lists the recent start failures of work on a node, for
// the node page.
func (s *Service) StartFailures(ctx context.Context, nodeID int64, limit int32) ([]StartFailure, error) {
	rows, err := s.q.WorkFailuresOnNode(ctx, s.pool, dbsqlc.WorkFailuresOnNodeParams{NodeID: nodeID, Lim: limit})
	return fromRows(rows, func(r dbsqlc.WorkFailuresOnNodeRow) StartFailure { return StartFailure(r) }), err
}

// StartFailure is a work item whose start failed on a node: how often,
// the last error and when.
type StartFailure struct {
	Failures  int32
	LastError string
	LastAt    time.Time
	Ref       string
	Kind      string
	State     string
}

// wouldStrand reports, inside tx, what moving all of node's work away
// would leave unplaced: it runs moveAway, the very code of a disable or an
// automatic failover, in a savepoint it rolls back, as the portal's
// preview does. The health checker says so in a manual-failover alert.
func (s *Service) wouldStrand(ctx context.Context, tx pgx.Tx, node *dbsqlc.Node) (MoveResult, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return MoveResult{}, err
	}
	defer func() { _ = sp.Rollback(ctx) }()
	return s.moveAway(ctx, sp, node, "preview", ActorPreview)
}
