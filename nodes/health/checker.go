package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/settings"
	"github.com/callplane/callplane/server/metrics"
)

// Fencer checks, inside a transaction, that this instance still leads
// with epoch (server.Leader implements it). It returns nodes.ErrNotLeader
// when a newer leader exists.
type Fencer = nodes.Fencer

// Domain is what the checker needs of the cluster domain (*nodes.Service
// implements it): the nodes, a fenced transaction in which the domain
// makes the checker's writes, and placing waiting work when nodes come
// up. The checker decides; the domain owns the transactions and the SQL.
type Domain interface {
	ListNodes(ctx context.Context, f nodes.NodeFilter) ([]nodes.Node, error)
	InCheckerTx(ctx context.Context, fence nodes.Fencer, epoch int64, fn func(*nodes.CheckerTx) error) error
	PlaceAllUnplaced(ctx context.Context, cause string) int
}

// Leadership is what the checker needs of the leader elector: the fence of
// its writes, and a way to give up a lease it can no longer serve.
type Leadership interface {
	Fencer
	// StepDown releases leadership held with epoch.
	StepDown(epoch int64, reason string)
}

// MaxConcurrentProbes bounds the probes in flight in one round.
const MaxConcurrentProbes = 64

// Checker probes every node and applies the health state machine. Run it
// on the leader only (server.Leader.WhileLeading).
type Checker struct {
	svc   Domain
	store *Store
	lead  Leadership
	log   *slog.Logger

	prober    *probe.Prober
	proberKey string
	lastPrune time.Time
	// trustSince is when this instance last began leading with the
	// database reachable; zero while it is not. Heartbeat staleness
	// counts only HeartbeatStale after it.
	trustSince time.Time
	// progress is the unix time (ns) of the checker's start or last
	// completed round, read by the stall watchdog.
	progress atomic.Int64
}

// NewChecker returns a Checker.
func NewChecker(svc Domain, store *Store, lead Leadership, log *slog.Logger) *Checker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Checker{svc: svc, store: store, lead: lead, log: log}
}

// Run probes every interval until ctx ends (leadership lost or shutdown).
// A watchdog steps the leader down when no round completes within the
// settings' StallAfter, so a stuck checker never holds the lease.
func (c *Checker) Run(ctx context.Context, epoch int64) {
	c.log.Info("health checker started", "epoch", epoch)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		if c.prober != nil {
			_ = c.prober.Close()
			c.prober, c.proberKey = nil, ""
		}
		c.log.Info("health checker stopped", "epoch", epoch)
	}()
	c.trustSince = time.Now()
	c.progress.Store(time.Now().UnixNano())
	first := settings.Builtin().ProbeInterval
	st, err := c.store.Load(ctx)
	if err == nil {
		first = st.ProbeInterval
	} else {
		st = settings.Builtin()
	}
	stall := &atomic.Int64{}
	stall.Store(int64(st.StallAfter()))
	wg.Go(func() { c.watchdog(ctx, epoch, stall) })
	if err := c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		return tx.CheckerStarted(ctx, c.holder(), epoch)
	}); err != nil && ctx.Err() == nil {
		c.log.Warn("record health checker start", "err", err)
	}
	// The first round comes one interval after taking over, as every later
	// one does: a new leader gives agents a moment to reach it, and an
	// interval set very long really means no probing.
	select {
	case <-ctx.Done():
		return
	case <-time.After(first):
	}
	for ctx.Err() == nil {
		start := time.Now()
		interval := settings.Builtin().ProbeInterval
		st, err := c.store.Load(ctx)
		if err == nil {
			interval = st.ProbeInterval
			stall.Store(int64(st.StallAfter()))
			if err = c.Round(ctx, epoch, st); errors.Is(err, nodes.ErrNotLeader) {
				c.log.Warn("health checker: no longer the leader", "epoch", epoch)
				return
			}
		}
		if err != nil && ctx.Err() == nil {
			c.log.Error("health check round", "err", err)
		}
		t := time.NewTimer(max(interval-time.Since(start), 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchdog steps the leader down when no round has completed for the
// stall bound (nanoseconds in stall).
func (c *Checker) watchdog(ctx context.Context, epoch int64, stall *atomic.Int64) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		idle := time.Since(time.Unix(0, c.progress.Load()))
		if bound := time.Duration(stall.Load()); idle > bound {
			c.lead.StepDown(epoch, fmt.Sprintf("the health checker completed no round for %s (bound %s)", idle.Round(time.Second), bound))
			return
		}
	}
}

// holder names this instance in the checker status row.
func (c *Checker) holder() string {
	if l, ok := c.lead.(interface{ ID() string }); ok {
		return l.ID()
	}
	return ""
}

// inTx runs fn in a domain transaction that first checks the leader
// fence, under the database retry policy (nodes.Service.InCheckerTx), so
// a race with an administrator's change never drops a round.
func (c *Checker) inTx(ctx context.Context, epoch int64, fn func(tx *nodes.CheckerTx) error) error {
	return c.svc.InCheckerTx(ctx, c.lead, epoch, fn)
}

// observation is one node's check in a round.
type observation struct {
	node    nodes.Node
	verdict Verdict
	ok      bool // verdict.OK, for the state machine
	probeOK bool // the probe's own outcome, recorded in the probe history
	latency time.Duration
	detail  string
}

// probeName says which check a kind's probe is, for people.
func probeName(kind string) string {
	switch kind {
	case nodes.KindMedia, nodes.KindIVR, nodes.KindQueue:
		return "SIP OPTIONS"
	case nodes.KindMeeting:
		return "WebRTC echo"
	case nodes.KindIM:
		return "TCP connect"
	}
	return "probe"
}

func (c *Checker) proberFor(st settings.Settings) (*probe.Prober, error) {
	key := fmt.Sprint(st.ProbeTimeout, st.SIPOKCodes)
	if c.prober != nil && c.proberKey == key {
		return c.prober, nil
	}
	var codes []int
	if len(st.SIPOKCodes) > 0 {
		codes = st.SIPOKCodes
	}
	p, err := probe.NewProber(probe.Config{Timeout: st.ProbeTimeout, SIPOKCodes: codes})
	if err != nil {
		return nil, err
	}
	if c.prober != nil {
		_ = c.prober.Close()
	}
	c.prober, c.proberKey = p, key
	return p, nil
}

// check probes every node concurrently, each probe under its own timeout,
// and judges each probe together with the agent's heartbeat.
func (c *Checker) check(ctx context.Context, st settings.Settings, list []nodes.Node, trusted bool) ([]observation, error) {
	p, err := c.proberFor(st)
	if err != nil {
		return nil, err
	}
	obs := make([]observation, len(list))
	sem := make(chan struct{}, MaxConcurrentProbes)
	var wg sync.WaitGroup
	now := time.Now()
	for i, n := range list {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			res := p.Probe(ctx, n.Kind, n.Address)
			o := observation{node: n, latency: res.Latency, probeOK: res.OK}
			if res.OK {
				o.detail = probeName(n.Kind) + " " + res.Detail
			} else {
				o.detail = probeName(n.Kind) + ": " + res.Detail
			}
			in := Observation{Health: n.Health, Enrolled: n.Enrolled(), ProbeOK: res.OK, Trusted: trusted}
			switch {
			case n.LastHeartbeatAt == nil:
				in.Heartbeat = HeartbeatNone
			case now.Sub(*n.LastHeartbeatAt) > st.HeartbeatStale:
				in.Heartbeat = HeartbeatStale
			default:
				in.Heartbeat = HeartbeatFresh
			}
			o.verdict = Judge(in)
			o.ok = o.verdict.OK
			switch {
			case !in.Enrolled && n.Health == nodes.HealthPending:
				o.detail += "; no agent has enrolled (create a join token and run nodeagent join)"
			case in.Heartbeat == HeartbeatNone && in.Enrolled:
				o.detail += "; no heartbeat since the agent enrolled"
			case in.Heartbeat == HeartbeatStale:
				o.detail += fmt.Sprintf("; heartbeat %s old (stale after %s)", now.Sub(*n.LastHeartbeatAt).Round(100*time.Millisecond), st.HeartbeatStale)
				if !trusted {
					o.detail += ", not counted: this checker took over or the database came back less than the stale time ago"
				}
			}
			obs[i] = o
		})
	}
	wg.Wait()
	return obs, ctx.Err()
}

// watched reports whether a node's failures count for the disruption
// guard and raise alerts: it has been up, is not disabled and not in
// maintenance.
func watched(n nodes.Node, now time.Time) bool {
	return n.Health != nodes.HealthPending && n.AdminState != nodes.StateDisabled && !n.InMaintenance(now)
}

// Round runs one probe round: probe, record, and apply every change. It
// ends by recording the completed round in checker_status.
func (c *Checker) Round(ctx context.Context, epoch int64, st settings.Settings) error {
	metrics.CheckerRounds.Inc()
	start := time.Now()
	list, err := c.svc.ListNodes(ctx, nodes.NodeFilter{})
	if err != nil {
		c.trustSince = time.Time{}
		return fmt.Errorf("list nodes: %w", err)
	}
	if c.trustSince.IsZero() {
		c.trustSince = start
	}
	trusted := time.Since(c.trustSince) >= st.HeartbeatStale
	obs, err := c.check(ctx, st, list, trusted)
	if err != nil {
		return err
	}
	guard, err := c.disruption(ctx, epoch, st, obs)
	if err != nil {
		return c.failed(err)
	}
	th := Thresholds{Fail: st.FailThreshold, Recover: st.RecoverThreshold}
	probes := make([]nodes.ProbeRecord, 0, len(obs))
	var same []nodes.ProbeState
	var changes, lost []observation
	now := time.Now()
	for _, o := range obs {
		n := o.node
		probes = append(probes, nodes.ProbeRecord{NodeID: n.ID, OK: o.probeOK, Latency: o.latency, Detail: o.detail})
		if agentLostChanges(st, o, now) {
			lost = append(lost, o)
		}
		cur := State{Health: n.Health, Fail: int(n.ConsecutiveFail), OK: int(n.ConsecutiveOK)}
		held := n.Held(now)
		next := Step(cur, o.ok, th, held)
		if next.Health != cur.Health || n.Flapping != held {
			changes = append(changes, o)
			continue
		}
		same = append(same, nodes.ProbeState{NodeID: n.ID, Health: n.Health, Fail: next.Fail, OK: next.OK, Detail: o.detail, Flapping: n.Flapping})
	}
	prune := time.Since(c.lastPrune) > time.Minute
	err = c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		return tx.RecordProbes(ctx, probes, same, prune)
	})
	if err != nil {
		return c.failed(err)
	}
	if prune {
		c.lastPrune = time.Now()
	}
	var back []string
	for _, o := range lost {
		cleared, err := c.agentLost(ctx, epoch, st, o)
		if err != nil {
			if errors.Is(err, nodes.ErrNotLeader) || ctx.Err() != nil {
				return err
			}
			c.log.Error("record agent lost", "node", o.node.Name, "err", err)
		}
		if cleared {
			back = append(back, o.node.Name)
		}
	}
	if len(back) > 0 {
		// A node whose agent is lost takes no new assignments, so work
		// may be waiting for it.
		c.svc.PlaceAllUnplaced(ctx, "the agent of node "+strings.Join(back, ", ")+" is back")
	}
	var placeAfter []string
	for _, o := range changes {
		ch, err := c.apply(ctx, epoch, st, th, guard, o)
		if err != nil {
			if errors.Is(err, nodes.ErrNotLeader) || ctx.Err() != nil {
				return err
			}
			c.log.Error("apply health change", "node", o.node.Name, "err", err)
			continue
		}
		if ch.cameUp {
			placeAfter = append(placeAfter, o.node.Name)
		}
	}
	if len(placeAfter) > 0 {
		c.svc.PlaceAllUnplaced(ctx, "node "+strings.Join(placeAfter, ", ")+" came up")
	}
	if !guard {
		for _, o := range obs {
			if err := c.sweep(ctx, epoch, st, o.node); err != nil {
				if errors.Is(err, nodes.ErrNotLeader) || ctx.Err() != nil {
					return err
				}
				c.log.Error("alert or fail over a node still down", "node", o.node.Name, "err", err)
			}
		}
	}
	err = c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		return tx.CheckerRoundDone(ctx, c.holder(), epoch, time.Since(start), len(list))
	})
	if err != nil {
		return c.failed(err)
	}
	c.progress.Store(time.Now().UnixNano())
	return nil
}

// failed notes a round that could not write: the database may be
// unreachable, so heartbeat staleness is not trusted again until it has
// been reachable for the stale time.
func (c *Checker) failed(err error) error {
	if !errors.Is(err, nodes.ErrNotLeader) {
		c.trustSince = time.Time{}
	}
	return err
}

// DisruptionPayload is the payload of a disruption alert.
type DisruptionPayload struct {
	Failing int       `json:"failing"`
	Total   int       `json:"total"`
	Share   int       `json:"share"`
	Nodes   []string  `json:"nodes"`
	At      time.Time `json:"at"`
}

// disruption applies the disruption guard to a round's observations: it
// starts, updates or ends the disruption and reports whether automatic
// failover (and per-node DOWN alerts) are held: a disruption not yet
// confirmed by an administrator.
//
// A disruption starts when the nodes that began failing within one window
// (the fail threshold's rounds: the time one node takes to go down) are
// more than the share; nodes that failed one by one earlier do not start
// one. It lasts while all the nodes failing now are more than the share.
func (c *Checker) disruption(ctx context.Context, epoch int64, st settings.Settings, obs []observation) (bool, error) {
	now := time.Now()
	var total, fresh int
	var failing []string
	for _, o := range obs {
		if !watched(o.node, now) {
			continue
		}
		total++
		if !o.ok {
			failing = append(failing, o.node.Name)
			if int(o.node.ConsecutiveFail) < st.FailThreshold {
				fresh++
			}
		}
	}
	starts := Disrupted(fresh, total, st.DisruptionShare)
	lasts := Disrupted(len(failing), total, st.DisruptionShare)
	guard := false
	err := c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		cur, err := tx.Disruption(ctx)
		if err != nil {
			return err
		}
		active := cur.Active
		disrupted := starts || (active && lasts)
		guard = disrupted && cur.ConfirmedAt == nil
		list := strings.Join(failing, ", ")
		switch {
		case disrupted && !active:
			if err := tx.SetDisruption(ctx, &now, len(failing), total, list); err != nil {
				return err
			}
			msg := fmt.Sprintf("Disruption: %d of %d nodes failed their checks at once (more than %d%%): %s. "+
				"The checker's own network or the control plane is the likelier fault, so automatic failover and per-node alerts are held "+
				"until it clears or an administrator confirms on the settings page", len(failing), total, st.DisruptionShare, list)
			if err := tx.Event(ctx, nil, "health", "critical", msg); err != nil {
				return err
			}
			body, err := json.Marshal(DisruptionPayload{Failing: len(failing), Total: total, Share: st.DisruptionShare, Nodes: failing, At: now})
			if err != nil {
				return err
			}
			return tx.QueueAlert(ctx, AlertDisruption, "", body)
		case disrupted:
			return tx.SetDisruption(ctx, &cur.Since, len(failing), total, list)
		case active:
			if err := tx.SetDisruption(ctx, nil, 0, 0, ""); err != nil {
				return err
			}
			msg := fmt.Sprintf("Disruption over after %s: %d of %d nodes failing now; automatic failover and alerts resume for nodes still down",
				now.Sub(cur.Since).Round(time.Second), len(failing), total)
			return tx.Event(ctx, nil, "health", "info", msg)
		}
		return nil
	})
	return guard, err
}

// agentLostChanges reports whether a node's agent-lost flag must be
// written this round: set, cleared, or due to be mailed.
func agentLostChanges(st settings.Settings, o observation, now time.Time) bool {
	n := o.node
	switch {
	case o.verdict.AgentLost && n.AgentLostSince == nil:
		return true
	case o.verdict.AgentLost:
		return !n.AgentLostAlerted && now.Sub(*n.AgentLostSince) >= st.AgentLostGrace && watched(n, now)
	case n.AgentLostSince != nil:
		// Cleared only by a fresh heartbeat: a node whose probe fails
		// now is failing, which says nothing new about its agent.
		return n.LastHeartbeatAt != nil && now.Sub(*n.LastHeartbeatAt) <= st.HeartbeatStale
	}
	return false
}

// agentLost sets, mails or clears a node's agent-lost flag, and reports
// whether it cleared it. Agent lost moves no work and changes no health:
// the service answers its probe. (The node takes no new assignments
// meanwhile: see node_eligibility.)
func (c *Checker) agentLost(ctx context.Context, epoch int64, st settings.Settings, o observation) (bool, error) {
	cleared := false
	err := c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		cleared = false
		n, err := tx.LockNode(ctx, o.node.ID)
		if err != nil {
			return err
		}
		now := time.Now()
		if !agentLostChanges(st, observation{node: n, verdict: o.verdict}, now) {
			return nil
		}
		payload := AlertPayload{Node: n.Name, Kind: n.Kind, Address: n.Address, From: n.Health, At: now,
			Reason: o.detail, Policy: st.PolicyFor(n.Kind), WorkOutcome: "no work moved: the node's service answers its probe"}
		switch {
		case o.verdict.AgentLost && n.AgentLostSince == nil:
			if err := tx.SetAgentLost(ctx, n.ID, &now, false); err != nil {
				return err
			}
			msg := fmt.Sprintf("Node %s: agent lost: %s; its service answers, so it stays %s and keeps its work (mailed if it lasts %s)",
				n.Name, o.detail, n.Health, st.AgentLostGrace)
			return tx.Event(ctx, &n, "health", "warning", msg)
		case o.verdict.AgentLost:
			if err := tx.SetAgentLost(ctx, n.ID, n.AgentLostSince, true); err != nil {
				return err
			}
			payload.To, payload.Since = ToAgentLost, *n.AgentLostSince
			return c.queueAlert(ctx, tx, &n, payload, "agent lost")
		default:
			if err := tx.SetAgentLost(ctx, n.ID, nil, false); err != nil {
				return err
			}
			cleared = true
			msg := fmt.Sprintf("Node %s: agent heartbeating again after %s lost", n.Name, now.Sub(*n.AgentLostSince).Round(time.Second))
			if err := tx.Event(ctx, &n, "health", "info", msg); err != nil {
				return err
			}
			if !n.AgentLostAlerted {
				return nil
			}
			payload.To, payload.Since, payload.WorkOutcome = ToAgentBack, *n.AgentLostSince, "nothing moved"
			return c.queueAlert(ctx, tx, &n, payload, "agent back")
		}
	})
	return cleared && err == nil, err
}

// queueAlert puts a health alert in the outbox and records that it did.
func (c *Checker) queueAlert(ctx context.Context, tx *nodes.CheckerTx, n *nodes.Node, p AlertPayload, what string) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := tx.QueueAlert(ctx, AlertHealth, n.Name, body); err != nil {
		return fmt.Errorf("queue alert: %w", err)
	}
	return tx.Event(ctx, n, "alert", "info", fmt.Sprintf("Alert email queued: node %s %s (%s)", n.Name, what, p.WorkOutcome))
}

// failsOver reports whether work on node n, if it is down, moves away
// automatically: its kind's policy is auto, it is not in maintenance and
// not disabled (a disabled node's work has moved already).
func failsOver(st settings.Settings, n *nodes.Node, now time.Time) bool {
	return n.CanFailOver(st.PolicyFor(n.Kind), now)
}

// stillDownDue reports whether a node that is down needs the sweep: it is
// watched again (maintenance ended, enabled, a disruption cleared) and
// either was never mailed for this outage or carries work that automatic
// failover should move.
func stillDownDue(st settings.Settings, n *nodes.Node, now time.Time) bool {
	if n.Health != nodes.HealthDown || !watched(*n, now) {
		return false
	}
	return !n.DownAlerted || (n.Used > 0 && failsOver(st, n, now))
}

// sweep handles a node that is still down but was not dealt with when it
// went down: its maintenance ended, it was enabled, a disruption held
// failover, or its kind's policy turned auto. It sends the DOWN email
// then (once per outage) and moves its work under automatic failover.
func (c *Checker) sweep(ctx context.Context, epoch int64, st settings.Settings, n nodes.Node) error {
	if !stillDownDue(st, &n, time.Now()) {
		return nil
	}
	return c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		cur, err := tx.LockNode(ctx, n.ID)
		if err != nil {
			return err
		}
		now := time.Now()
		if !stillDownDue(st, &cur, now) {
			return nil
		}
		outcome, noRoom, err := c.downOutcome(ctx, tx, st, &cur, "node still down (automatic failover)")
		if err != nil || cur.DownAlerted {
			return err
		}
		why := "it is watched again (its maintenance ended, it was enabled, or a disruption cleared)"
		if cur.MaintenanceUntil != nil && !cur.MaintenanceUntil.After(now) {
			why = "its maintenance ended at " + cur.MaintenanceUntil.UTC().Format(time.RFC3339)
		}
		if err := tx.Event(ctx, &cur, "health", "critical",
			fmt.Sprintf("Node %s is still down now that %s: %s", cur.Name, why, cur.LastProbeDetail)); err != nil {
			return err
		}
		if err := tx.SetDownAlerted(ctx, cur.ID, true); err != nil {
			return err
		}
		return c.queueAlert(ctx, tx, &cur, AlertPayload{
			Node: cur.Name, Kind: cur.Kind, Address: cur.Address, From: nodes.HealthDown, To: nodes.HealthDown,
			At: cur.HealthChangedAt, Reason: fmt.Sprintf("still down now that %s: %s", why, cur.LastProbeDetail),
			Policy: st.PolicyFor(cur.Kind), WorkOutcome: outcome, NoRoom: noRoom,
		}, "down")
	})
}

// downOutcome applies the failover policy to a node that is down, inside
// tx: under auto it moves the work away; otherwise it says what stays,
// and whether the other nodes lack the room to take it (noRoom), as the
// portal's disable preview does.
func (c *Checker) downOutcome(ctx context.Context, tx *nodes.CheckerTx, st settings.Settings, n *nodes.Node, cause string) (string, bool, error) {
	wk := nodes.WorkKindFor(n.Kind)
	now := time.Now()
	if n.AdminState == nodes.StateDisabled {
		return "the node is disabled; its work was already moved", false, nil
	}
	if failsOver(st, n, now) {
		mr, err := tx.MoveAway(ctx, *n, cause)
		if err != nil {
			return "", false, fmt.Errorf("fail over %s: %w", n.Name, err)
		}
		return mr.Summary(wk), false, nil
	}
	live, err := tx.LiveWork(ctx, n.ID)
	if err != nil || live == 0 {
		return "no work was on the node", false, err
	}
	if n.InMaintenance(now) {
		return fmt.Sprintf("%s stay on the node (maintenance: no automatic failover)", nodes.WorkNoun(wk, live)), false, nil
	}
	out := fmt.Sprintf("%s stay on the node until an administrator disables it (manual failover)", nodes.WorkNoun(wk, live))
	mr, err := tx.WouldStrand(ctx, *n)
	switch {
	case err != nil:
		return "", false, err
	case mr.Unplaced == 0:
		return out, false, nil
	case mr.Moved == 0:
		return out + fmt.Sprintf("; no other enabled, up %s node has room, so disabling it leaves all %s waiting unplaced", n.Kind, nodes.WorkNoun(wk, live)), true, nil
	}
	return out + fmt.Sprintf("; the other %s nodes have room for %s, so disabling it leaves %s waiting unplaced",
		n.Kind, nodes.WorkNoun(wk, int64(mr.Moved)), nodes.WorkNoun(wk, int64(mr.Unplaced))), true, nil
}

type applied struct {
	cameUp bool
}

// apply writes one node's health change in one fenced transaction: the
// new state, its event, the flap record and hold, the alert in the outbox
// and, under automatic failover, the move of the node's work. The node
// row is locked and the state machine applied again to it, so a
// concurrent change is not overwritten. guard holds failover and DOWN
// alerts during an unconfirmed disruption.
func (c *Checker) apply(ctx context.Context, epoch int64, st settings.Settings, th Thresholds, guard bool, o observation) (applied, error) {
	var out applied
	err := c.inTx(ctx, epoch, func(tx *nodes.CheckerTx) error {
		out = applied{}
		n, err := tx.LockNode(ctx, o.node.ID)
		if err != nil {
			return err
		}
		now := time.Now()
		cur := State{Health: n.Health, Fail: int(n.ConsecutiveFail), OK: int(n.ConsecutiveOK)}
		held := n.Held(now)
		next := Step(cur, o.ok, th, held)
		holdUntil := n.HoldUntil
		if !held {
			holdUntil = nil
		}
		startHold := false
		if Flaps(cur.Health, next.Health) && !guard {
			count, err := tx.RecordFlap(ctx, n.ID, cur.Health, next.Health, st.FlapWindow)
			if err != nil {
				return err
			}
			if count >= st.FlapLimit && !held {
				held, startHold = true, true
				until := now.Add(st.FlapWindow)
				holdUntil = &until
				next = Step(cur, o.ok, th, true)
			}
		}
		updated, err := tx.SetHealth(ctx, nodes.ProbeState{
			NodeID: n.ID, Health: next.Health, Fail: next.Fail, OK: next.OK, Detail: o.detail, Flapping: held,
		}, holdUntil)
		if err != nil {
			return err
		}
		switch {
		case startHold:
			msg := fmt.Sprintf("Node %s is flapping (%d up/down changes within %s): held down until %s unless an administrator clears the hold",
				n.Name, st.FlapLimit, st.FlapWindow, holdUntil.UTC().Format(time.RFC3339))
			if err := tx.Event(ctx, &n, "health", "warning", msg); err != nil {
				return err
			}
		case !held && n.Flapping:
			if err := tx.Event(ctx, &n, "health", "info",
				fmt.Sprintf("Node %s: flap hold ended; it comes up again once its checks pass", n.Name)); err != nil {
				return err
			}
		}
		if next.Health == cur.Health {
			return nil
		}
		return c.transition(ctx, tx, st, guard, &n, &updated, cur, next, o, &out)
	})
	return out, err
}

func (c *Checker) transition(ctx context.Context, tx *nodes.CheckerTx, st settings.Settings, guard bool, old, n *nodes.Node, cur, next State, o observation, out *applied) error {
	now := time.Now()
	inMaint := n.InMaintenance(now)
	disabled := n.AdminState == nodes.StateDisabled
	quiet := ""
	switch {
	case disabled:
		quiet = " (node disabled: no alert, no failover)"
	case inMaint:
		quiet = " (in maintenance: no alert, no failover)"
	case guard && next.Health == nodes.HealthDown:
		quiet = " (disruption: automatic failover and the alert are held)"
	}
	event := func(sev, msg string) error {
		return tx.Event(ctx, n, "health", sev, msg+quiet)
	}
	payload := AlertPayload{
		Node: n.Name, Kind: n.Kind, Address: n.Address, From: cur.Health, To: next.Health,
		At: now, Reason: o.detail, Policy: st.PolicyFor(n.Kind), Maintenance: inMaint,
	}

	switch {
	case next.Health == nodes.HealthSuspect:
		return event("warning", fmt.Sprintf("Node %s is suspect: %s (failure %d of %d)", n.Name, o.detail, next.Fail, st.FailThreshold))

	case next.Health == nodes.HealthDown:
		if err := event("critical", fmt.Sprintf("Node %s is down after %d consecutive failed checks: %s", n.Name, next.Fail, o.detail)); err != nil {
			return err
		}
		if disabled || inMaint || guard || cur.Health == nodes.HealthPending {
			return nil
		}
		outcome, noRoom, err := c.downOutcome(ctx, tx, st, n, "node down (automatic failover)")
		if err != nil {
			return err
		}
		payload.WorkOutcome, payload.NoRoom = outcome, noRoom
		if err := tx.SetDownAlerted(ctx, n.ID, true); err != nil {
			return err
		}
		return c.queueAlert(ctx, tx, n, payload, "down")

	case next.Health == nodes.HealthUp:
		out.cameUp = true
		switch cur.Health {
		case nodes.HealthPending:
			return event("info", fmt.Sprintf("Node %s is up: probe and agent agree after %d checks (%s)", n.Name, next.OK, o.detail))
		case nodes.HealthSuspect:
			return event("info", fmt.Sprintf("Node %s is up again after %d failed checks: %s", n.Name, cur.Fail, o.detail))
		}
		// Recovery from down: old.HealthChangedAt is when it went down.
		down := now.Sub(old.HealthChangedAt).Round(time.Second)
		if !old.DownAlerted {
			// Nobody was told it was down (disabled, maintenance, a
			// disruption): its recovery is no news either.
			return event("info", fmt.Sprintf("Node %s recovered after %s down: %s (no DOWN email was sent, so no recovery email)", n.Name, down, o.detail))
		}
		if err := tx.SetDownAlerted(ctx, n.ID, false); err != nil {
			return err
		}
		if ack, ok, err := tx.AckSince(ctx, n.Name, old.HealthChangedAt); err != nil {
			return err
		} else if ok {
			payload.AckedBy, payload.AckNote = ack.By, ack.Note
		}
		if err := event("info", fmt.Sprintf("Node %s recovered after %s down: %s", n.Name, down, o.detail)); err != nil {
			return err
		}
		payload.Since = old.HealthChangedAt
		payload.WorkOutcome = "work waiting unplaced is placed again; moved work stays where it went"
		return c.queueAlert(ctx, tx, n, payload, "recovery")
	}
	return nil
}
