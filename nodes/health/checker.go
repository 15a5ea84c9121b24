package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/server/metrics"
)

// Fencer checks, inside a transaction, that this instance still leads
// with epoch (server.Leader implements it). It returns nodes.ErrNotLeader
// when a newer leader exists.
type Fencer interface {
	Fence(ctx context.Context, tx pgx.Tx, epoch int64) error
}

// MaxConcurrentProbes bounds the probes in flight in one round.
const MaxConcurrentProbes = 64

// Checker probes every node and applies the health state machine. Run it
// on the leader only (server.Leader.WhileLeading).
type Checker struct {
	svc   *nodes.Service
	store *Store
	fence Fencer
	log   *slog.Logger

	prober    *probe.Prober
	proberKey string
	lastPrune time.Time
}

// NewChecker returns a Checker.
func NewChecker(svc *nodes.Service, store *Store, fence Fencer, log *slog.Logger) *Checker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Checker{svc: svc, store: store, fence: fence, log: log}
}

// Run probes every interval until ctx ends (leadership lost or shutdown).
func (c *Checker) Run(ctx context.Context, epoch int64) {
	c.log.Info("health checker started", "epoch", epoch)
	defer func() {
		if c.prober != nil {
			_ = c.prober.Close()
			c.prober, c.proberKey = nil, ""
		}
		c.log.Info("health checker stopped", "epoch", epoch)
	}()
	// The first round comes one interval after taking over, as every later
	// one does: a new leader gives agents a moment to reach it, and an
	// interval set very long really means no probing.
	first := Builtin().ProbeInterval
	if st, err := c.store.Load(ctx); err == nil {
		first = st.ProbeInterval
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(first):
	}
	for ctx.Err() == nil {
		start := time.Now()
		interval := Builtin().ProbeInterval
		st, err := c.store.Load(ctx)
		if err == nil {
			interval = st.ProbeInterval
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

// observation is one node's check in a round.
type observation struct {
	node    dbsqlc.Node
	ok      bool
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

func (c *Checker) proberFor(st Settings) (*probe.Prober, error) {
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
// and combines the probe with heartbeat freshness.
func (c *Checker) check(ctx context.Context, st Settings, list []dbsqlc.Node) ([]observation, error) {
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
			o := observation{node: n, ok: res.OK, latency: res.Latency}
			if res.OK {
				o.detail = probeName(n.Kind) + " " + res.Detail
			} else {
				o.detail = probeName(n.Kind) + ": " + res.Detail
			}
			if n.EnrolledAt != nil {
				switch {
				case n.LastHeartbeatAt == nil:
					o.ok = false
					o.detail += "; no heartbeat since the agent enrolled"
				case now.Sub(*n.LastHeartbeatAt) > st.HeartbeatStale:
					o.ok = false
					o.detail += fmt.Sprintf("; heartbeat %s old (stale after %s)", now.Sub(*n.LastHeartbeatAt).Round(100*time.Millisecond), st.HeartbeatStale)
				}
			}
			obs[i] = o
		})
	}
	wg.Wait()
	return obs, ctx.Err()
}

// Round runs one probe round: probe, record, and apply every change.
func (c *Checker) Round(ctx context.Context, epoch int64, st Settings) error {
	metrics.CheckerRounds.Inc()
	pool := c.svc.Pool()
	list, err := db.Q.NodeList(ctx, pool)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	if len(list) == 0 {
		return nil
	}
	obs, err := c.check(ctx, st, list)
	if err != nil {
		return err
	}
	th := Thresholds{Fail: st.FailThreshold, Recover: st.RecoverThreshold}
	results := dbsqlc.ProbeResultInsertBatchParams{}
	batch := dbsqlc.NodeProbeBatchParams{}
	var changes []observation
	for _, o := range obs {
		n := o.node
		results.NodeIds = append(results.NodeIds, n.ID)
		results.Oks = append(results.Oks, o.ok)
		results.Latencies = append(results.Latencies, o.latency.Microseconds())
		results.Details = append(results.Details, o.detail)
		cur := State{Health: n.Health, Fail: int(n.ConsecutiveFail), OK: int(n.ConsecutiveOk)}
		next := Step(cur, o.ok, th, false)
		if next.Health != cur.Health || n.Flapping {
			changes = append(changes, o)
			continue
		}
		batch.Ids = append(batch.Ids, n.ID)
		batch.Healths = append(batch.Healths, n.Health)
		batch.Fails = append(batch.Fails, int32(next.Fail))
		batch.Oks = append(batch.Oks, int32(next.OK))
		batch.Details = append(batch.Details, o.detail)
		batch.Flappings = append(batch.Flappings, false)
	}
	prune := time.Since(c.lastPrune) > time.Minute
	err = db.InTx(ctx, pool, func(tx pgx.Tx) error {
		if err := c.fence.Fence(ctx, tx, epoch); err != nil {
			return err
		}
		if err := db.Q.ProbeResultInsertBatch(ctx, tx, results); err != nil {
			return fmt.Errorf("record probe results: %w", err)
		}
		if len(batch.Ids) > 0 {
			if err := db.Q.NodeProbeBatch(ctx, tx, batch); err != nil {
				return fmt.Errorf("record probe round: %w", err)
			}
		}
		if prune {
			if _, err := db.Q.ProbeResultPrune(ctx, tx); err != nil {
				return fmt.Errorf("prune probe results: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if prune {
		c.lastPrune = time.Now()
	}
	var placeAfter []string
	for _, o := range changes {
		ch, err := c.apply(ctx, epoch, st, th, o)
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
	for _, n := range list {
		if err := c.sweep(ctx, epoch, st, n); err != nil {
			if errors.Is(err, nodes.ErrNotLeader) || ctx.Err() != nil {
				return err
			}
			c.log.Error("fail over a node still down", "node", n.Name, "err", err)
		}
	}
	return nil
}

// failsOver reports whether work on node n, if it is down, moves away
// automatically: its kind's policy is auto, it is not in maintenance and
// not disabled (a disabled node's work has moved already).
func failsOver(st Settings, n *dbsqlc.Node, now time.Time) bool {
	inMaint := n.MaintenanceUntil != nil && n.MaintenanceUntil.After(now)
	return st.PolicyFor(n.Kind) == PolicyAuto && !inMaint && n.AdminState != nodes.StateDisabled
}

// sweep moves the work off a node that is still down and carries work it
// should not: its maintenance ended while it was down, its kind's policy
// was switched to auto, or work reached it while it went down. The move
// happens when the state changes; this catches what changed afterwards.
func (c *Checker) sweep(ctx context.Context, epoch int64, st Settings, n dbsqlc.Node) error {
	if n.Health != nodes.HealthDown || n.Used == 0 || !failsOver(st, &n, time.Now()) {
		return nil
	}
	return db.InTx(ctx, c.svc.Pool(), func(tx pgx.Tx) error {
		if err := c.fence.Fence(ctx, tx, epoch); err != nil {
			return err
		}
		cur, err := db.Q.NodeGetForUpdate(ctx, tx, n.ID)
		if err != nil {
			return db.Translate(err)
		}
		if cur.Health != nodes.HealthDown || cur.Used == 0 || !failsOver(st, &cur, time.Now()) {
			return nil
		}
		_, err = c.svc.MoveAway(ctx, tx, &cur, "node still down (automatic failover)", nodes.ActorChecker)
		return err
	})
}

type applied struct {
	cameUp bool
}

// apply writes one node's health change in one transaction that starts
// with the leader fence: the new state, its event, the alert in the
// outbox and, under automatic failover, the move of the node's work. The
// node row is locked and the state machine applied again to it, so a
// concurrent change (a first heartbeat) is not overwritten.
func (c *Checker) apply(ctx context.Context, epoch int64, st Settings, th Thresholds, o observation) (applied, error) {
	var out applied
	err := db.InTx(ctx, c.svc.Pool(), func(tx pgx.Tx) error {
		if err := c.fence.Fence(ctx, tx, epoch); err != nil {
			return err
		}
		n, err := db.Q.NodeGetForUpdate(ctx, tx, o.node.ID)
		if err != nil {
			return db.Translate(err)
		}
		cur := State{Health: n.Health, Fail: int(n.ConsecutiveFail), OK: int(n.ConsecutiveOk)}
		held := false
		if n.Health != nodes.HealthPending {
			changes, err := db.Q.NodeHealthChanges(ctx, tx, dbsqlc.NodeHealthChangesParams{NodeID: &n.ID, WindowSeconds: st.FlapWindow.Seconds()})
			if err != nil {
				return err
			}
			held = int(changes) >= st.FlapLimit
		}
		next := Step(cur, o.ok, th, held)
		flapping := held && next.Health != nodes.HealthUp
		updated, err := db.Q.NodeSetHealth(ctx, tx, dbsqlc.NodeSetHealthParams{
			ID: n.ID, Health: next.Health, ConsecutiveFail: int32(next.Fail), ConsecutiveOk: int32(next.OK),
			LastProbeDetail: o.detail, Flapping: flapping,
		})
		if err != nil {
			return err
		}
		if flapping && !n.Flapping {
			msg := fmt.Sprintf("Node %s is flapping (%d health changes within %s): held down and flagged until it is stable",
				n.Name, st.FlapLimit, st.FlapWindow)
			if err := c.svc.Event(ctx, tx, &n, "health", "warning", nodes.ActorChecker.Name, msg); err != nil {
				return err
			}
		} else if !flapping && n.Flapping {
			if err := c.svc.Event(ctx, tx, &n, "health", "info", nodes.ActorChecker.Name,
				fmt.Sprintf("Node %s is stable again: no longer flagged as flapping", n.Name)); err != nil {
				return err
			}
		}
		if next.Health == cur.Health {
			return nil
		}
		return c.transition(ctx, tx, st, &n, &updated, cur, next, o, &out)
	})
	return out, err
}

func (c *Checker) transition(ctx context.Context, tx pgx.Tx, st Settings, old, n *dbsqlc.Node, cur, next State, o observation, out *applied) error {
	now := time.Now()
	inMaint := n.MaintenanceUntil != nil && n.MaintenanceUntil.After(now)
	disabled := n.AdminState == nodes.StateDisabled
	policy := st.PolicyFor(n.Kind)
	quiet := ""
	switch {
	case disabled:
		quiet = " (node disabled: no alert, no failover)"
	case inMaint:
		quiet = " (in maintenance: no alert, no failover)"
	}
	event := func(sev, msg string) error {
		return c.svc.Event(ctx, tx, n, "health", sev, nodes.ActorChecker.Name, msg+quiet)
	}
	payload := AlertPayload{
		Node: n.Name, Kind: n.Kind, Address: n.Address, From: cur.Health, To: next.Health,
		At: now, Reason: o.detail, Policy: policy, Maintenance: inMaint,
	}
	sendAlert := !disabled && !inMaint

	switch {
	case next.Health == nodes.HealthSuspect:
		return event("warning", fmt.Sprintf("Node %s is suspect: %s (failure %d of %d)", n.Name, o.detail, next.Fail, st.FailThreshold))

	case next.Health == nodes.HealthDown:
		if err := event("critical", fmt.Sprintf("Node %s is down after %d consecutive failed checks: %s", n.Name, next.Fail, o.detail)); err != nil {
			return err
		}
		if cur.Health == nodes.HealthPending {
			sendAlert = false
		}
		wk := nodes.WorkKindFor(n.Kind)
		switch {
		case disabled:
			payload.WorkOutcome = "the node is disabled; its work was already moved"
		case policy == PolicyAuto && !inMaint:
			mr, err := c.svc.MoveAway(ctx, tx, n, "node down (automatic failover)", nodes.ActorChecker)
			if err != nil {
				return fmt.Errorf("fail over %s: %w", n.Name, err)
			}
			payload.WorkOutcome = mr.Summary(wk)
		default:
			live, err := db.Q.NodeLiveWorkCount(ctx, tx, &n.ID)
			if err != nil {
				return err
			}
			switch {
			case live == 0:
				payload.WorkOutcome = "no work was on the node"
			case inMaint:
				payload.WorkOutcome = fmt.Sprintf("%s stay on the node (maintenance: no automatic failover)", nodes.WorkNoun(wk, live))
			default:
				payload.WorkOutcome = fmt.Sprintf("%s stay on the node until an administrator disables it (manual failover)", nodes.WorkNoun(wk, live))
			}
		}

	case next.Health == nodes.HealthUp:
		out.cameUp = true
		switch cur.Health {
		case nodes.HealthPending:
			return event("info", fmt.Sprintf("Node %s is up: %d checks passed (%s)", n.Name, next.OK, o.detail))
		case nodes.HealthSuspect:
			return event("info", fmt.Sprintf("Node %s is up again after %d failed checks: %s", n.Name, cur.Fail, o.detail))
		}
		// Recovery from down: old.HealthChangedAt is when it went down.
		payload.Since = old.HealthChangedAt
		down := now.Sub(old.HealthChangedAt).Round(time.Second)
		payload.WorkOutcome = "work waiting unplaced is placed again; moved work stays where it went"
		if ack, ok, err := c.svc.AckSince(ctx, tx, n.Name, old.HealthChangedAt); err != nil {
			return err
		} else if ok {
			payload.AckedBy, payload.AckNote = ack.By, ack.Note
		}
		if err := event("info", fmt.Sprintf("Node %s recovered after %s down: %s", n.Name, down, o.detail)); err != nil {
			return err
		}
	default:
		return nil
	}
	if !sendAlert {
		return nil
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	if err := db.Q.AlertInsert(ctx, tx, dbsqlc.AlertInsertParams{Type: AlertHealth, NodeName: n.Name, Payload: body}); err != nil {
		return fmt.Errorf("queue alert: %w", err)
	}
	what := "down"
	if next.Health == nodes.HealthUp {
		what = "recovery"
	}
	return c.svc.Event(ctx, tx, n, "alert", "info", nodes.ActorChecker.Name,
		fmt.Sprintf("Alert email queued: node %s %s (%s)", n.Name, what, payload.WorkOutcome))
}
