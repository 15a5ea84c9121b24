package nodes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/problem"
)

// Limits on node fields.
const (
	MaxCapacity   = 100000
	MaxWeight     = 1000
	DefaultWeight = 100
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// NodeInput is what an administrator gives to register or edit a node.
// Capacity and Weight are strings so forms and flags share one parser.
type NodeInput struct {
	Name        string
	Kind        string
	Address     string
	Capacity    string
	Weight      string
	Region      string
	Description string
}

type nodeFields struct {
	capacity, weight int32
}

// Validate checks a node input; editing skips the name and kind, which
// cannot change. It is the one validation the portal, CLI and API share.
func Validate(in NodeInput, editing bool) (nodeFields, problem.FieldErrors) {
	fe := problem.FieldErrors{}
	var f nodeFields
	if !editing {
		switch {
		case in.Name == "":
			fe.Add("name", "name is required")
		case !nameRE.MatchString(in.Name):
			fe.Add("name", "use 1-63 lowercase letters, digits and dashes, starting and ending with a letter or digit")
		}
		if !slices.Contains(Kinds, in.Kind) {
			fe.Add("kind", "kind must be one of "+strings.Join(Kinds, ", "))
		}
	}
	if in.Address == "" {
		fe.Add("address", "address is required")
	} else if slices.Contains(Kinds, in.Kind) {
		if err := probe.ValidateAddress(in.Kind, in.Address); err != nil {
			fe.Add("address", addressHint(in.Kind, err))
		}
	}
	c, err := strconv.Atoi(strings.TrimSpace(in.Capacity))
	switch {
	case in.Capacity == "":
		fe.Add("capacity", "capacity is required")
	case err != nil:
		fe.Add("capacity", "capacity must be a whole number")
	case c <= 0:
		fe.Add("capacity", "capacity must be at least 1")
	case c > MaxCapacity:
		fe.Add("capacity", fmt.Sprintf("capacity must be at most %d", MaxCapacity))
	default:
		f.capacity = int32(c)
	}
	f.weight = DefaultWeight
	if strings.TrimSpace(in.Weight) != "" {
		w, err := strconv.Atoi(strings.TrimSpace(in.Weight))
		switch {
		case err != nil:
			fe.Add("weight", "weight must be a whole number")
		case w < 1 || w > MaxWeight:
			fe.Add("weight", fmt.Sprintf("weight must be between 1 and %d", MaxWeight))
		default:
			f.weight = int32(w)
		}
	}
	if utf8.RuneCountInString(in.Region) > 64 {
		fe.Add("region", "region must be at most 64 characters")
	}
	if utf8.RuneCountInString(in.Description) > 500 {
		fe.Add("description", "description must be at most 500 characters")
	}
	return f, fe
}

func addressHint(kind string, err error) string {
	hint := map[string]string{
		KindMedia:   "host:port (SIP over UDP) or sip:host:port;transport=tcp",
		KindIVR:     "host:port (SIP over UDP) or sip:host:port;transport=tcp",
		KindQueue:   "host:port (SIP over UDP) or sip:host:port;transport=tcp",
		KindMeeting: "an http:// or https:// URL of the WebRTC probe endpoint",
		KindIM:      "host:port",
	}[kind]
	return fmt.Sprintf("%v; a %s node's address is %s", err, kind, hint)
}

// AddNode registers a node. Nothing is written when the input is invalid.
func (s *Service) AddNode(ctx context.Context, actor Actor, in NodeInput) (Node, error) {
	in = trimInput(in)
	f, fe := Validate(in, false)
	if err := fe.Err(); err != nil {
		return Node{}, err
	}
	var n dbsqlc.Node
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		owner, err := s.addressOwner(ctx, tx, 0, in.Kind, in.Address)
		if err != nil {
			return err
		}
		if owner != "" {
			return addressInUse(owner, in.Kind, in.Address)
		}
		n, err = s.q.NodeInsert(ctx, tx, dbsqlc.NodeInsertParams{
			Name: in.Name, Kind: in.Kind, Address: in.Address, Capacity: f.capacity, Weight: f.weight,
			Region: in.Region, Description: in.Description, UpdatedBy: actor.Name,
		})
		if err != nil {
			if errors.Is(db.Translate(err), db.ErrConflict) {
				return problem.Taken("name", fmt.Sprintf("a node named %q already exists", in.Name))
			}
			return err
		}
		detail := fmt.Sprintf("kind=%s address=%s capacity=%d weight=%d", n.Kind, n.Address, n.Capacity, n.Weight)
		if err := s.audit(ctx, tx, actor, "node.add", n.Name, detail); err != nil {
			return err
		}
		return s.event(ctx, tx, &n, "node", "info", actor.Name, fmt.Sprintf("Node %s (%s) registered by %s", n.Name, n.Kind, actor.Name))
	})
	return nodeFromRow(n), err
}

// UpdateNode edits a node's address, capacity, weight, region and
// description. Raising capacity places waiting work; lowering it below the
// node's load moves the excess away (newest work first), by Plan.
func (s *Service) UpdateNode(ctx context.Context, actor Actor, name string, in NodeInput) (Node, error) {
	var n dbsqlc.Node
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		n, _, err = s.updateNodeTx(ctx, tx, actor, name, in)
		return err
	})
	if err == nil {
		s.PlaceUnplaced(ctx, WorkKindFor(n.Kind), "capacity raised")
	}
	return nodeFromRow(n), err
}

// updateNodeTx is UpdateNode's transaction, shared with PreviewChange.
func (s *Service) updateNodeTx(ctx context.Context, tx pgx.Tx, actor Actor, name string, in NodeInput) (dbsqlc.Node, MoveResult, error) {
	in = trimInput(in)
	old, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
	if err != nil {
		return old, MoveResult{}, fmt.Errorf("node %q: %w", name, db.Translate(err))
	}
	in.Kind = old.Kind
	f, fe := Validate(in, true)
	if err := fe.Err(); err != nil {
		return old, MoveResult{}, err
	}
	if in.Address != old.Address {
		owner, err := s.addressOwner(ctx, tx, old.ID, old.Kind, in.Address)
		if err != nil {
			return old, MoveResult{}, err
		}
		if owner != "" {
			return old, MoveResult{}, addressInUse(owner, old.Kind, in.Address)
		}
	}
	n, err := s.q.NodeUpdate(ctx, tx, dbsqlc.NodeUpdateParams{
		ID: old.ID, Address: in.Address, Capacity: f.capacity, Weight: f.weight,
		Region: in.Region, Description: in.Description, UpdatedBy: actor.Name,
	})
	if err != nil {
		return n, MoveResult{}, err
	}
	detail := fmt.Sprintf("address=%s capacity=%d->%d weight=%d->%d", n.Address, old.Capacity, n.Capacity, old.Weight, n.Weight)
	if err := s.audit(ctx, tx, actor, "node.update", n.Name, detail); err != nil {
		return n, MoveResult{}, err
	}
	var mr MoveResult
	if n.Used > n.Capacity {
		mr, err = s.moveExcess(ctx, tx, &n, "capacity lowered", actor)
	} else {
		mr, err = s.staysAll(ctx, tx, n.ID)
	}
	if err != nil {
		return n, mr, err
	}
	return n, mr, s.event(ctx, tx, &n, "node", "info", actor.Name, fmt.Sprintf("Node %s edited by %s (capacity %d, weight %d)", n.Name, actor.Name, n.Capacity, n.Weight))
}

func trimInput(in NodeInput) NodeInput {
	in.Name = strings.TrimSpace(in.Name)
	in.Kind = strings.TrimSpace(in.Kind)
	in.Address = strings.TrimSpace(in.Address)
	in.Region = strings.TrimSpace(in.Region)
	in.Description = strings.TrimSpace(in.Description)
	return in
}

// Preview actions.
const (
	ActionEnable   = "enable"
	ActionDrain    = "drain"
	ActionDisable  = "disable"
	ActionRemove   = "remove"
	ActionCapacity = "capacity"
)

// Action is a change to preview: {"action": "disable"} or
// {"action": "capacity", "capacity": 40}, as the JSON API takes it.
type Action struct {
	Action   string `json:"action"`
	Capacity int    `json:"capacity,omitempty"`
}

// ActionFor returns the preview action of an admin state ("enabled",
// "draining", "disabled") or "remove", as the portal names them.
func ActionFor(target string) Action {
	switch target {
	case StateEnabled:
		return Action{Action: ActionEnable}
	case StateDraining:
		return Action{Action: ActionDrain}
	case StateDisabled:
		return Action{Action: ActionDisable}
	}
	return Action{Action: target}
}

// Impact is the exact preview of an action on a node: the Change (moves
// per destination node, unplaced, stays) the action would make now,
// computed by the action's own code in a transaction that is rolled back,
// and the node's load before it. As JSON it is
// {"node", "action", "capacity", "moves", "unplaced", "stays"}.
type Impact struct {
	Node     Node        `json:"-"`
	NodeName string      `json:"node"`
	Action   string      `json:"action"`
	Capacity int         `json:"capacity,omitempty"`
	Target   string      `json:"-"` // the portal's name: an admin state, "remove" or "capacity"
	Carrying []KindCount `json:"-"`
	Units    int64       `json:"-"` // work units (sum of costs) on the node
	Items    int64       `json:"-"` // work items on the node
	Change
}

// Moved counts the items the action moves to other nodes.
func (im Impact) Moved() int {
	n := 0
	for _, items := range im.Moves {
		n += len(items)
	}
	return n
}

// Fits reports whether every item the action moves finds room.
func (im Impact) Fits() bool { return len(im.Unplaced) == 0 }

// MovesWork reports whether the action moves any work now.
func (im Impact) MovesWork() bool { return im.Moved() > 0 || len(im.Unplaced) > 0 }

// PreviewChange returns what action would do to the node's work now. It
// runs the action's own transaction (SetAdminState, RemoveNode with its
// work moved, or UpdateNode with the new capacity) and rolls it back, so
// performing the action right after gives the same Change.
func (s *Service) PreviewChange(ctx context.Context, name string, a Action) (Impact, error) {
	target := map[string]string{ActionEnable: StateEnabled, ActionDrain: StateDraining, ActionDisable: StateDisabled,
		ActionRemove: ActionRemove, ActionCapacity: ActionCapacity}[a.Action]
	switch {
	case target == "":
		return Impact{}, problem.FieldErrors{"action": "action must be one of enable, drain, disable, remove, capacity"}
	case a.Action == ActionCapacity && (a.Capacity <= 0 || a.Capacity > MaxCapacity):
		return Impact{}, problem.FieldErrors{"capacity": fmt.Sprintf("capacity must be between 1 and %d", MaxCapacity)}
	}
	im := Impact{NodeName: name, Action: a.Action, Target: target}
	if a.Action == ActionCapacity {
		im.Capacity = a.Capacity
	}
	ctx = asPreview(ctx)
	err := db.Rollback(ctx, s.pool, func(tx pgx.Tx) error {
		n, err := s.q.NodeGetByName(ctx, tx, name)
		if err != nil {
			return fmt.Errorf("node %q: %w", name, db.Translate(err))
		}
		im.Node = nodeFromRow(n)
		carrying, err := s.q.WorkCountsByNode(ctx, tx, &n.ID)
		if err != nil {
			return err
		}
		im.Carrying = fromRows(carrying, func(r dbsqlc.WorkCountsByNodeRow) KindCount { return KindCount(r) })
		for _, c := range im.Carrying {
			im.Units += c.Cost
			im.Items += c.N
		}
		var mr MoveResult
		switch a.Action {
		case ActionRemove:
			_, mr, err = s.removeNodeTx(ctx, tx, ActorPreview, name, true)
		case ActionCapacity:
			in := NodeInput{Address: n.Address, Capacity: strconv.Itoa(a.Capacity), Weight: strconv.Itoa(int(n.Weight)),
				Region: n.Region, Description: n.Description}
			_, mr, err = s.updateNodeTx(ctx, tx, ActorPreview, name, in)
		default:
			_, mr, err = s.setAdminStateTx(ctx, tx, ActorPreview, name, target)
		}
		im.Change = mr.Change
		return err
	})
	if err != nil {
		return Impact{}, err
	}
	return im, nil
}

// SetAdminState enables, drains or disables a node. Disabling moves all
// its work to the remaining nodes of its kind in the same transaction;
// enabling places waiting work.
func (s *Service) SetAdminState(ctx context.Context, actor Actor, name, state string) (Node, MoveResult, error) {
	var n dbsqlc.Node
	var mr MoveResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		n, mr, err = s.setAdminStateTx(ctx, tx, actor, name, state)
		return err
	})
	if err == nil {
		s.creds.dropNodes([]int64{n.ID})
	}
	if err == nil && state == StateEnabled {
		s.PlaceUnplaced(ctx, WorkKindFor(n.Kind), "node "+n.Name+" enabled")
	}
	return nodeFromRow(n), mr, err
}

// setAdminStateTx is SetAdminState's transaction, shared with PreviewChange.
func (s *Service) setAdminStateTx(ctx context.Context, tx pgx.Tx, actor Actor, name, state string) (dbsqlc.Node, MoveResult, error) {
	if !slices.Contains(AdminStates, state) {
		return dbsqlc.Node{}, MoveResult{}, problem.FieldErrors{"state": "state must be enabled, draining or disabled"}
	}
	old, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
	if err != nil {
		return old, MoveResult{}, fmt.Errorf("node %q: %w", name, db.Translate(err))
	}
	n, err := s.q.NodeSetAdminState(ctx, tx, dbsqlc.NodeSetAdminStateParams{ID: old.ID, AdminState: state, UpdatedBy: actor.Name})
	if err != nil {
		return n, MoveResult{}, err
	}
	if err := s.audit(ctx, tx, actor, "node."+verb(state), n.Name, old.AdminState+" -> "+state); err != nil {
		return n, MoveResult{}, err
	}
	sev := "info"
	if state == StateDisabled {
		sev = "warning"
	}
	if err := s.event(ctx, tx, &n, "admin", sev, actor.Name, fmt.Sprintf("Node %s %s by %s (was %s)", n.Name, pastTense(state), actor.Name, old.AdminState)); err != nil {
		return n, MoveResult{}, err
	}
	if err := s.notify(ctx, tx, n.ID); err != nil {
		return n, MoveResult{}, err
	}
	if err := s.notifyAccess(ctx, tx, n.ID); err != nil {
		return n, MoveResult{}, err
	}
	var mr MoveResult
	if state == StateDisabled {
		mr, err = s.moveAway(ctx, tx, &n, "node disabled by "+actor.Name, actor)
	} else {
		mr, err = s.staysAll(ctx, tx, n.ID)
	}
	return n, mr, err
}

func verb(state string) string {
	return map[string]string{StateEnabled: "enable", StateDraining: "drain", StateDisabled: "disable"}[state]
}

func pastTense(state string) string {
	return map[string]string{StateEnabled: "enabled", StateDraining: "set to draining", StateDisabled: "disabled"}[state]
}

// RemoveNode deletes a node. A node that carries work is removed only
// with moveWork, which first moves its work away in the same transaction.
// Its join tokens and credentials go with it, so its agent is refused.
func (s *Service) RemoveNode(ctx context.Context, actor Actor, name string, moveWork bool) (MoveResult, error) {
	var mr MoveResult
	var n dbsqlc.Node
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		n, mr, err = s.removeNodeTx(ctx, tx, actor, name, moveWork)
		return err
	})
	if err == nil {
		s.creds.dropNodes([]int64{n.ID})
	}
	return mr, err
}

// removeNodeTx is RemoveNode's transaction, shared with PreviewChange.
func (s *Service) removeNodeTx(ctx context.Context, tx pgx.Tx, actor Actor, name string, moveWork bool) (dbsqlc.Node, MoveResult, error) {
	n, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
	if err != nil {
		return n, MoveResult{}, fmt.Errorf("node %q: %w", name, db.Translate(err))
	}
	if n.Used > 0 && !moveWork {
		return n, MoveResult{}, fmt.Errorf("remove node %s: %w (%d units); confirm moving it", name, ErrBusy, n.Used)
	}
	mr, err := s.moveAway(ctx, tx, &n, "node removed by "+actor.Name, actor)
	if err != nil {
		return n, mr, err
	}
	// Wake its agent's long-poll and make every instance forget its
	// credential: the next call is refused.
	if err := s.notify(ctx, tx, n.ID); err != nil {
		return n, mr, err
	}
	if err := s.notifyAccess(ctx, tx, n.ID); err != nil {
		return n, mr, err
	}
	if err := s.q.NodeDelete(ctx, tx, n.ID); err != nil {
		return n, mr, err
	}
	if err := s.audit(ctx, tx, actor, "node.remove", n.Name, fmt.Sprintf("kind=%s moved=%d unplaced=%d", n.Kind, mr.Moved, mr.Unplaced)); err != nil {
		return n, mr, err
	}
	return n, mr, s.event(ctx, tx, nil, "node", "warning", actor.Name, fmt.Sprintf("Node %s (%s) removed by %s", n.Name, n.Kind, actor.Name))
}

// ClearHold ends a flapping node's hold at an administrator's word: the
// node comes up again as soon as its checks pass, and its count of
// up/down transitions starts afresh.
func (s *Service) ClearHold(ctx context.Context, actor Actor, name string) (Node, error) {
	var n dbsqlc.Node
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		old, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
		if err != nil {
			return fmt.Errorf("node %q: %w", name, db.Translate(err))
		}
		if !old.Flapping && old.HoldUntil == nil {
			return problem.FieldErrors{"node": fmt.Sprintf("node %s is not held", name)}
		}
		if n, err = s.q.NodeClearHold(ctx, tx, dbsqlc.NodeClearHoldParams{ID: old.ID, UpdatedBy: actor.Name}); err != nil {
			return err
		}
		if err := s.q.TransitionDeleteForNode(ctx, tx, old.ID); err != nil {
			return err
		}
		until := "unknown"
		if old.HoldUntil != nil {
			until = old.HoldUntil.UTC().Format(time.RFC3339)
		}
		if err := s.audit(ctx, tx, actor, "node.hold.clear", n.Name, "flap hold until "+until+" cleared"); err != nil {
			return err
		}
		return s.event(ctx, tx, &n, "health", "info", actor.Name,
			fmt.Sprintf("Node %s: flap hold (until %s) cleared by %s; it comes up once its checks pass", n.Name, until, actor.Name))
	})
	if err != nil {
		var fe problem.FieldErrors
		if errors.As(err, &fe) {
			s.AuditFailure(ctx, actor, "node.hold.clear", name, err)
		}
	}
	return nodeFromRow(n), err
}
