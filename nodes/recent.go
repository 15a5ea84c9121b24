package nodes

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/callplane/callplane/nodes/agentproto"
)

// Deltas a call manager placed itself reach the agents it streams to
// without being read back from Postgres. A placement group locks its nodes
// before it draws its version and holds them until it commits, so what it
// placed on a node is the whole of that node's change from the version
// before (prevVersion) to the group's: a delta this instance already has
// in hand. The placer keeps these deltas (recentDeltas.placed) before it
// notifies, and its notification names the version it drew.
//
// A stream may answer a wake from them only when it is sure they are the
// whole story since its agent's version:
//
//   - every change notified without a version (a move, an end, a resync,
//     an older call manager, a listener that reconnected and may have
//     missed some) sends the stream to the database, until its next read
//     there (the mark a stream takes before each read);
//   - a version notified for the node that the kept deltas do not reach
//     (another call manager's placement) does too.
//
// Anything else, or any doubt, reads the database as before.

// recentSegments bounds the deltas kept per node: a stream is never more
// than a few placements behind, or it reads the database.
const recentSegments = 16

type recentDeltas struct {
	mu sync.Mutex
	// seq counts notifications without a version; all is seq at the last
	// that concerned every node.
	seq, all uint64
	nodes    map[int64]*recentNode
}

type recentNode struct {
	unknown   uint64 // seq at this node's last change notified without a version
	announced int64  // the highest version notified for the node
	segs      []recentSegment
}

// recentSegment is what one placement group placed on a node: the items,
// taking the node from version prev to version, and their share of the
// node's live_digest.
type recentSegment struct {
	prev, version int64
	items         []agentproto.Assignment
	digest        int64
}

func (r *recentDeltas) node(id int64) *recentNode {
	if r.nodes == nil {
		r.nodes = map[int64]*recentNode{}
	}
	n := r.nodes[id]
	if n == nil {
		n = &recentNode{}
		r.nodes[id] = n
	}
	return n
}

// placed keeps what a committed placement group put on a node, in version
// order.
func (r *recentDeltas) placed(nodeID, prev, version int64, items []agentproto.Assignment) {
	var digest int64
	for _, a := range items {
		digest ^= workDigest(a.ID, a.Epoch)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.node(nodeID)
	i := len(n.segs)
	for i > 0 && n.segs[i-1].version > version {
		i--
	}
	n.segs = slices.Insert(n.segs, i, recentSegment{prev: prev, version: version, items: items, digest: digest})
	if len(n.segs) > recentSegments {
		n.segs = append(n.segs[:0:0], n.segs[len(n.segs)-recentSegments:]...)
	}
}

// notified records an assignment notification before its waiters wake:
// the version it announces for ids, or (version 0) a change at a version
// not known here; ids nil means every node.
func (r *recentDeltas) notified(ids []int64, version int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if version == 0 {
		r.seq++
	}
	if ids == nil {
		r.all = r.seq
		return
	}
	for _, id := range ids {
		n := r.node(id)
		if version == 0 {
			n.unknown = r.seq
		} else {
			n.announced = max(n.announced, version)
		}
	}
}

// mark is what a stream notes just before it reads a node's delta from
// the database.
func (r *recentDeltas) mark(nodeID int64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.nodes[nodeID]; n != nil {
		return max(r.all, n.unknown)
	}
	return r.all
}

// delta is the node's delta since the agent's version from the deltas kept
// here, and whether they are the whole of it: nothing notified without a
// version since mark, and they reach every version notified. With nothing
// new, it is an empty delta at since.
func (r *recentDeltas) delta(nodeID, since int64, mark uint64) (agentproto.DesiredSet, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[nodeID]
	if n == nil || since <= 0 || max(r.all, n.unknown) != mark {
		return agentproto.DesiredSet{}, false
	}
	ds := agentproto.DesiredSet{Version: since, Delta: true, Assignments: []agentproto.Assignment{}}
	for _, sg := range n.segs {
		if sg.prev == ds.Version {
			ds.Assignments = append(ds.Assignments, sg.items...)
			ds.Version = sg.version
		}
	}
	if ds.Version < n.announced || len(ds.Assignments) >= deltaLimit {
		return agentproto.DesiredSet{}, false
	}
	return ds, true
}

// unapplied is what an agent's report may lack of its node's live work
// because the deliveries are still on their way: the latest placements
// kept here, newest first. The i-th lag is the last i+1 placements
// together: their digest, and their items' ids.
func (r *recentDeltas) unapplied(nodeID int64) []lag {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[nodeID]
	if n == nil {
		return nil
	}
	lags := make([]lag, 0, len(n.segs))
	var l lag
	for i := len(n.segs) - 1; i >= 0; i-- {
		l.digest ^= n.segs[i].digest
		l.ids = slices.Clone(l.ids)
		for _, a := range n.segs[i].items {
			l.ids = append(l.ids, a.ID)
		}
		lags = append(lags, l)
	}
	return lags
}

// lag is placements a report may not show yet (see unapplied).
type lag struct {
	digest int64
	ids    []int64
}

// parseAssignPayload reads an AssignChannel payload: the node ids (nil for
// all) and the version a placement notified, 0 if none.
func parseAssignPayload(payload string) ([]int64, int64) {
	if payload == "*" || payload == "" {
		return nil, 0
	}
	parts := strings.Split(payload, ",")
	ids := make([]int64, 0, len(parts))
	var version int64
	for _, p := range parts {
		if v, ok := strings.CutPrefix(p, "@"); ok {
			version, _ = strconv.ParseInt(v, 10, 64)
			continue
		}
		if id, err := strconv.ParseInt(p, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, version
}

// ParseNodeIDs reads the node ids of an AssignChannel or AccessChannel
// payload, nil for all.
func ParseNodeIDs(payload string) []int64 {
	ids, _ := parseAssignPayload(payload)
	return ids
}

// Notified records an assignment notification as the instance's listener
// hears it, before it wakes the streams it names (see recentDeltas).
func (s *Service) Notified(payload string) {
	s.recent.notified(parseAssignPayload(payload))
}

// DeltaMark is what a stream notes before it reads its node's delta from
// the database, for RecentDelta.
func (s *Service) DeltaMark(nodeID int64) uint64 { return s.recent.mark(nodeID) }

// RecentDelta answers a stream's wake from what this instance placed, when
// that is all that changed on the node since the agent's version and since
// the stream's last read of the database (mark); false means read it.
func (s *Service) RecentDelta(nodeID, since int64, mark uint64) (agentproto.DesiredSet, bool) {
	return s.recent.delta(nodeID, since, mark)
}
