package nodes

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/probe"
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
func Validate(in NodeInput, editing bool) (nodeFields, FieldErrors) {
	fe := FieldErrors{}
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
	if len(in.Region) > 64 {
		fe.Add("region", "region must be at most 64 characters")
	}
	if len(in.Description) > 500 {
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
func (s *Service) AddNode(ctx context.Context, actor Actor, in NodeInput) (dbsqlc.Node, error) {
	in = trimInput(in)
	f, fe := Validate(in, false)
	if err := fe.Err(); err != nil {
		return dbsqlc.Node{}, err
	}
	var n dbsqlc.Node
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		n, err = s.q.NodeInsert(ctx, tx, dbsqlc.NodeInsertParams{
			Name: in.Name, Kind: in.Kind, Address: in.Address, Capacity: f.capacity, Weight: f.weight,
			Region: in.Region, Description: in.Description, UpdatedBy: actor.Name,
		})
		if err != nil {
			if errors.Is(db.Translate(err), db.ErrConflict) {
				return FieldErrors{"name": fmt.Sprintf("a node named %q already exists", in.Name)}
			}
			return err
		}
		detail := fmt.Sprintf("kind=%s address=%s capacity=%d weight=%d", n.Kind, n.Address, n.Capacity, n.Weight)
		if err := s.audit(ctx, tx, actor, "node.add", n.Name, detail); err != nil {
			return err
		}
		return s.event(ctx, tx, &n, "node", "info", actor.Name, fmt.Sprintf("Node %s (%s) registered by %s", n.Name, n.Kind, actor.Name))
	})
	return n, err
}

// UpdateNode edits a node's address, capacity, weight, region and
// description. Raising capacity places waiting work; lowering it below the
// node's load moves the excess away.
func (s *Service) UpdateNode(ctx context.Context, actor Actor, name string, in NodeInput) (dbsqlc.Node, error) {
	in = trimInput(in)
	var n dbsqlc.Node
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		old, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
		if err != nil {
			return fmt.Errorf("node %q: %w", name, db.Translate(err))
		}
		in.Kind = old.Kind
		f, fe := Validate(in, true)
		if err := fe.Err(); err != nil {
			return err
		}
		n, err = s.q.NodeUpdate(ctx, tx, dbsqlc.NodeUpdateParams{
			ID: old.ID, Address: in.Address, Capacity: f.capacity, Weight: f.weight,
			Region: in.Region, Description: in.Description, UpdatedBy: actor.Name,
		})
		if err != nil {
			return err
		}
		detail := fmt.Sprintf("address=%s capacity=%d->%d weight=%d->%d", n.Address, old.Capacity, n.Capacity, old.Weight, n.Weight)
		if err := s.audit(ctx, tx, actor, "node.update", n.Name, detail); err != nil {
			return err
		}
		if n.Used > n.Capacity {
			items, err := s.q.WorkNewestOnNode(ctx, tx, &n.ID)
			if err != nil {
				return err
			}
			var excess []workItem
			over := n.Used - n.Capacity
			for _, it := range items {
				if over <= 0 {
					break
				}
				excess = append(excess, workItem{id: it.ID, cost: it.Cost})
				over -= it.Cost
			}
			if _, err := s.moveItems(ctx, tx, &n, excess, "capacity lowered", actor); err != nil {
				return err
			}
		}
		return s.event(ctx, tx, &n, "node", "info", actor.Name, fmt.Sprintf("Node %s edited by %s (capacity %d, weight %d)", n.Name, actor.Name, n.Capacity, n.Weight))
	})
	if err == nil && n.Capacity > 0 {
		s.PlaceUnplaced(ctx, WorkKindFor(n.Kind), "capacity raised")
	}
	return n, err
}

func trimInput(in NodeInput) NodeInput {
	in.Name = strings.TrimSpace(in.Name)
	in.Kind = strings.TrimSpace(in.Kind)
	in.Address = strings.TrimSpace(in.Address)
	in.Region = strings.TrimSpace(in.Region)
	in.Description = strings.TrimSpace(in.Description)
	return in
}

// Impact describes what an admin state change or removal would do.
type Impact struct {
	Node       dbsqlc.Node
	Target     string // the admin state asked for, or "remove"
	Carrying   []dbsqlc.WorkCountsByNodeRow
	Units      int64 // work units (sum of costs) on the node
	Items      int64
	FreeOthers int64 // free capacity on the other enabled, up nodes of the kind
	Others     int32 // how many such nodes
	Fits       bool  // the others can take all of it
	MovesWork  bool  // this change moves the node's work now
}

// PreviewChange returns the impact of setting a node's admin state to
// target ("enabled", "draining", "disabled" or "remove").
func (s *Service) PreviewChange(ctx context.Context, name, target string) (Impact, error) {
	if target != "remove" && !slices.Contains(AdminStates, target) {
		return Impact{}, FieldErrors{"state": "state must be enabled, draining or disabled"}
	}
	n, err := s.GetNode(ctx, name)
	if err != nil {
		return Impact{}, err
	}
	carrying, err := s.q.WorkCountsByNode(ctx, s.pool, &n.ID)
	if err != nil {
		return Impact{}, err
	}
	room, err := s.q.NodeRoomForKind(ctx, s.pool, dbsqlc.NodeRoomForKindParams{Kind: n.Kind, ExcludeID: n.ID})
	if err != nil {
		return Impact{}, err
	}
	im := Impact{Node: n, Target: target, Carrying: carrying, FreeOthers: room.Free, Others: room.Nodes}
	for _, c := range carrying {
		im.Units += c.Cost
		im.Items += c.N
	}
	im.Fits = im.Units <= room.Free
	im.MovesWork = (target == StateDisabled || target == "remove") && im.Items > 0
	return im, nil
}

// SetAdminState enables, drains or disables a node. Disabling moves all
// its work to the remaining nodes of its kind in the same transaction;
// enabling places waiting work.
func (s *Service) SetAdminState(ctx context.Context, actor Actor, name, state string) (dbsqlc.Node, MoveResult, error) {
	if !slices.Contains(AdminStates, state) {
		return dbsqlc.Node{}, MoveResult{}, FieldErrors{"state": "state must be enabled, draining or disabled"}
	}
	var n dbsqlc.Node
	var mr MoveResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		old, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
		if err != nil {
			return fmt.Errorf("node %q: %w", name, db.Translate(err))
		}
		n, err = s.q.NodeSetAdminState(ctx, tx, dbsqlc.NodeSetAdminStateParams{ID: old.ID, AdminState: state, UpdatedBy: actor.Name})
		if err != nil {
			return err
		}
		if err := s.audit(ctx, tx, actor, "node."+verb(state), n.Name, old.AdminState+" -> "+state); err != nil {
			return err
		}
		sev := "info"
		if state == StateDisabled {
			sev = "warning"
		}
		if err := s.event(ctx, tx, &n, "admin", sev, actor.Name, fmt.Sprintf("Node %s %s by %s (was %s)", n.Name, pastTense(state), actor.Name, old.AdminState)); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, n.ID); err != nil {
			return err
		}
		if err := s.notifyAccess(ctx, tx, n.ID); err != nil {
			return err
		}
		if state == StateDisabled {
			mr, err = s.MoveAway(ctx, tx, &n, "node disabled by "+actor.Name, actor)
			return err
		}
		return nil
	})
	if err == nil {
		s.creds.dropNodes([]int64{n.ID})
	}
	if err == nil && state == StateEnabled {
		s.PlaceUnplaced(ctx, WorkKindFor(n.Kind), "node "+n.Name+" enabled")
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
	var removedID int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := s.q.NodeGetByNameForUpdate(ctx, tx, name)
		if err != nil {
			return fmt.Errorf("node %q: %w", name, db.Translate(err))
		}
		if n.Used > 0 {
			if !moveWork {
				return fmt.Errorf("remove node %s: %w (%d units); confirm moving it", name, ErrBusy, n.Used)
			}
			if mr, err = s.MoveAway(ctx, tx, &n, "node removed by "+actor.Name, actor); err != nil {
				return err
			}
		}
		removedID = n.ID
		// Wake its agent's long-poll and make every instance forget its
		// credential: the next call is refused.
		if err := s.notify(ctx, tx, n.ID); err != nil {
			return err
		}
		if err := s.notifyAccess(ctx, tx, n.ID); err != nil {
			return err
		}
		if err := s.q.NodeDelete(ctx, tx, n.ID); err != nil {
			return err
		}
		if err := s.audit(ctx, tx, actor, "node.remove", n.Name, fmt.Sprintf("kind=%s moved=%d unplaced=%d", n.Kind, mr.Moved, mr.Unplaced)); err != nil {
			return err
		}
		return s.event(ctx, tx, nil, "node", "warning", actor.Name, fmt.Sprintf("Node %s (%s) removed by %s", n.Name, n.Kind, actor.Name))
	})
	if err == nil {
		s.creds.dropNodes([]int64{removedID})
	}
	return mr, err
}
