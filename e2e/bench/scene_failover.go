package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db/localpg"
	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/settings"
)

// sceneFailover: a media node carrying 10,000 calls dies (its SIP probe
// endpoint closes and its agent stops heartbeating); the health checker
// must find it down and move its calls, and the receiving agents' long-polls
// must answer. Before that, small nodes are killed one by one at random
// instants to sample the detection time over many kills.
func sceneFailover(ctx context.Context, pg *localpg.Server, root string) error {
	fmt.Println("== failover scene: default health settings (probe every 750ms, 500ms timeout, down after 3 failures)")
	sc, err := newScene(ctx, pg, root, "bench_failover", nil)
	if err != nil {
		return err
	}
	defer sc.close()
	victimEP, err := probe.NewEndpoint(ctx, "media", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer victimEP.Close()
	victim, err := sc.addNodes(ctx, "victim", 1, opt.calls*2, func(int) string { return victimEP.Address() })
	if err != nil {
		return err
	}
	if err := sc.enroll(ctx, victim, false); err != nil {
		return err
	}
	if err := sc.waitHealth(ctx, victim, nodes.HealthUp, 30*time.Second); err != nil {
		return err
	}
	// The victim is the only media node up: every call goes to it. One
	// that does not (the victim looked down or lost for a moment, on a
	// machine busy with the scene before) is a figure, not the end of the
	// run; the scene's other figures need every call on the victim.
	t0 := time.Now()
	var astray atomic.Int64
	var firstAstray atomic.Value
	if err := parallel(opt.calls, 16, func(i int) error {
		p, err := sc.svc.PlaceWork(ctx, actor, nodes.WorkInput{Kind: nodes.WorkCall, Ref: fmt.Sprintf("fo-%06d", i), Cost: 1})
		if err == nil && p.Node != victim[0] {
			if astray.Add(1) == 1 {
				firstAstray.Store(fmt.Sprintf("%s went to %q (state %s) after %s", p.Ref, p.Node, p.State, time.Since(t0).Round(100*time.Millisecond)))
			}
		}
		return err
	}); err != nil {
		return err
	}
	if n := astray.Load(); n > 0 {
		health := "?"
		if v, err := sc.svc.GetNode(ctx, victim[0]); err == nil {
			health = v.Health
		}
		report("failover: calls placed on the victim before the kill", fmt.Sprintf("%d of %d went elsewhere", n, opt.calls), "all on the victim", false,
			fmt.Sprintf("first: %s; the victim is %s now; the scene's other figures are not measured", firstAstray.Load(), health))
		return nil
	}
	logf("%d calls placed on %s in %s", opt.calls, victim[0], time.Since(t0).Round(100*time.Millisecond))

	healthy, err := probe.NewEndpoint(ctx, "media", "0.0.0.0:0")
	if err != nil {
		return err
	}
	defer healthy.Close()
	recv, err := sc.addNodes(ctx, "recv", opt.foRecv, opt.calls, loopbackAddrs(healthy.Address()))
	if err != nil {
		return err
	}
	if err := sc.enroll(ctx, recv, true); err != nil {
		return err
	}
	if err := sc.waitHealth(ctx, recv, nodes.HealthUp, 30*time.Second); err != nil {
		return err
	}
	detect, err := detectionTrial(ctx, sc, "small", opt.foSmall)
	if err != nil {
		return err
	}
	// The big one: listen for the commit of the move, then kill the victim.
	conn, err := pgx.Connect(ctx, sc.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+nodes.AssignChannel); err != nil {
		return err
	}
	vnode, err := sc.svc.GetNode(ctx, victim[0])
	if err != nil {
		return err
	}
	vid := strconv.FormatInt(vnode.ID, 10)
	movedIDs := map[int64]bool{}
	rows, err := sc.svc.ListWork(ctx, nodes.WorkFilter{Node: victim[0], Limit: 1000})
	if err != nil {
		return err
	}
	_ = rows // ListWork is capped at 1000; the ids come from the receivers instead
	sc.rec.reset()
	commitCh := make(chan time.Time, 1)
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	go func() {
		for {
			n, err := conn.WaitForNotification(lctx)
			if err != nil {
				return
			}
			at := time.Now()
			if n.Payload == "*" || slices.Contains(strings.Split(n.Payload, ","), vid) {
				select {
				case commitCh <- at:
				default:
				}
				return
			}
		}
	}()
	killAt := time.Now()
	_ = victimEP.Close()
	sc.agent(victim[0]).kill()
	var commitAt time.Time
	select {
	case commitAt = <-commitCh:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("no move committed within 30s of the kill (log: %s)", sc.cm.logPath)
	}
	vnode, err = sc.svc.GetNode(ctx, victim[0])
	if err != nil {
		return err
	}
	detectedAt := vnode.HealthChangedAt
	if vnode.Health != nodes.HealthDown {
		return fmt.Errorf("victim is %s after its move", vnode.Health)
	}
	detect = append(detect, commitAt.Sub(killAt))
	// Every moved call reaching a receiving agent's long-poll.
	var allAt time.Time
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		sc.rec.mu.Lock()
		got := len(sc.rec.received)
		allAt = time.Time{}
		for id, t := range sc.rec.received {
			movedIDs[id] = true
			if t.After(allAt) {
				allAt = t
			}
		}
		sc.rec.mu.Unlock()
		if got >= opt.calls {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	onVictim, onRecv := int64(0), int64(0)
	for _, name := range append([]string{victim[0]}, recv...) {
		n, _ := sc.svc.GetNode(ctx, name)
		c, _ := sc.svc.NodeWorkCounts(ctx, n.ID)
		for _, x := range c {
			if name == victim[0] {
				onVictim += x.N
			} else {
				onRecv += x.N
			}
		}
	}
	moveEvent := ""
	if evs, err := sc.svc.ListEvents(ctx, victim[0], "", 20); err == nil {
		for _, e := range evs {
			if e.Type == "move" {
				moveEvent = e.Message
				break
			}
		}
	}
	logf("victim down: kill→decision %s, decision→commit %s; %d calls left on it, %d on the receivers; %d moved calls seen by agents",
		detectedAt.Sub(killAt).Round(time.Millisecond), commitAt.Sub(detectedAt).Round(time.Millisecond), onVictim, onRecv, len(movedIDs))
	if len(moveEvent) > 160 {
		moveEvent = moveEvent[:160] + "…"
	}
	logf("event: %s", moveEvent)
	st := settings.Builtin()
	// The same kills with faster probing: interval 700 ms, timeout 500 ms
	// (still well above the 200 ms jitter of the false-failover run).
	tuned := map[string]string{settings.KeyProbeInterval: "700ms", settings.KeyProbeTimeout: "500ms"}
	if err := saveSettings(ctx, sc.pool, tuned); err != nil {
		return err
	}
	time.Sleep(4 * time.Second) // the call manager's settings cache lasts 2 s
	fast, err := detectionTrial(ctx, sc, "fast", opt.foSmall)
	if err != nil {
		return err
	}
	p99 := percentile(detect, 0.99)
	report("failover detection p99 (kill→down committed)", fmt.Sprintf("%.2f s", p99.Seconds()), "<= 3 s", p99 <= 3*time.Second,
		fmt.Sprintf("%d kills, p50 %.2f s, max %.2f s; probe %s, timeout %s, down after %d", len(detect), percentile(detect, 0.5).Seconds(),
			percentile(detect, 1).Seconds(), st.ProbeInterval, st.ProbeTimeout, st.FailThreshold))
	fp99 := percentile(fast, 0.99)
	report("failover detection p99, probe 700ms/500ms", fmt.Sprintf("%.2f s", fp99.Seconds()), "<= 3 s", fp99 <= 3*time.Second,
		fmt.Sprintf("%d kills, p50 %.2f s, max %.2f s; settings saved as an operator would", len(fast), percentile(fast, 0.5).Seconds(), percentile(fast, 1).Seconds()))
	reassign := commitAt.Sub(detectedAt)
	report("failover reassignment of 10,000 calls", ms(reassign), "<= 500 ms", reassign <= 500*time.Millisecond && onVictim == 0 && onRecv == int64(opt.calls),
		fmt.Sprintf("decision→commit, one transaction; %d on %d receivers", onRecv, len(recv)))
	notified := allAt.Sub(detectedAt)
	report("failover agents notified (all long-polls)", ms(notified), "<= 1 s", notified <= time.Second && len(movedIDs) >= opt.calls,
		fmt.Sprintf("decision→last of %d moved calls at a receiving agent; commit→last %s", len(movedIDs), ms(allAt.Sub(commitAt))))
	return nil
}

// sceneFalseFailover runs side-by-side clusters of nodes whose probe
// answers are delayed at random, with the probe rate raised, and counts
// nodes wrongly found down.
func sceneFalseFailover(ctx context.Context, pg *localpg.Server, root string) error {
	fmt.Printf("== false-failover scene: %d clusters x %d nodes, jitter %s, probe every %s with %s timeout, %s\n",
		opt.ffClusters, opt.ffNodes, opt.ffJitter, opt.ffInterval, opt.ffTimeout, opt.ffDuration)
	settings := map[string]string{settings.KeyProbeInterval: opt.ffInterval.String(), settings.KeyProbeTimeout: opt.ffTimeout.String()}
	scenes := make([]*scene, opt.ffClusters)
	var all [][]string
	for k := range scenes {
		sc, err := newScene(ctx, pg, root, fmt.Sprintf("bench_ff%02d", k), settings)
		if err != nil {
			return err
		}
		scenes[k] = sc
		defer sc.close()
		eps := make([]*jitterSIP, opt.ffNodes)
		for i := range eps {
			if eps[i], err = newJitterSIP(opt.ffJitter); err != nil {
				return err
			}
			defer eps[i].Close()
		}
		names, err := sc.addNodes(ctx, "ff", opt.ffNodes, 100, func(i int) string { return eps[i].Address() })
		if err != nil {
			return err
		}
		if err := sc.enroll(ctx, names, true); err != nil {
			return err
		}
		all = append(all, names)
	}
	// A node that is slow to come up on a busy machine is a figure, not
	// the end of the run: the scene runs with what is up and says so.
	var slow []string
	for k, sc := range scenes {
		if err := sc.waitHealth(ctx, all[k], nodes.HealthUp, 60*time.Second); err != nil {
			slow = append(slow, err.Error())
		}
	}
	report("false failover: nodes up before the run", fmt.Sprintf("%d clusters late", len(slow)), "all up within 60 s", len(slow) == 0, strings.Join(slow, "; "))
	time.Sleep(2 * opt.ffInterval)
	start := time.Now()
	logf("all %d nodes up; running %s", opt.ffClusters*opt.ffNodes, opt.ffDuration)
	time.Sleep(opt.ffDuration)
	var downs, suspects, probes, failures int
	var maxLat int64
	for k, sc := range scenes {
		evs, err := sc.svc.ListEvents(ctx, "", "", 100000)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.At.Before(start) || e.Type != "health" {
				continue
			}
			switch {
			case strings.Contains(e.Message, " is down"):
				downs++
			case strings.Contains(e.Message, " is suspect"):
				suspects++
			}
		}
		for _, name := range all[k] {
			n, err := sc.svc.GetNode(ctx, name)
			if err != nil {
				return err
			}
			prs, err := sc.svc.ProbeHistory(ctx, n.ID, 100000)
			if err != nil {
				return err
			}
			for _, p := range prs {
				if p.At.Before(start) {
					continue
				}
				probes++
				if !p.OK {
					failures++
				}
				maxLat = max(maxLat, p.Latency.Microseconds())
			}
		}
	}
	el := time.Since(start)
	hourEq := float64(probes) / float64(opt.ffNodes*3600)
	report("false-failovers (hour-equivalent, 200 ms jitter)", fmt.Sprintf("%d", downs), "0", downs == 0 && hourEq >= 1,
		fmt.Sprintf("%.2f hour-equivalents: %d probes of 100 nodes (3,600 per node-hour at 1 s) in %s; %d failed probes, %d suspects, slowest answer %s",
			hourEq, probes, el.Round(time.Second), failures, suspects, ms(time.Duration(maxLat)*time.Microsecond)))
	return nil
}

// detectionTrial registers n small media nodes, each with its own SIP
// probe endpoint and agent, waits for them to be up, then kills them one
// at a time at random instants (endpoint closed, agent gone) and returns
// each node's time from kill to its down state being committed (seen by
// polling every 10 ms). The nodes are removed afterwards.
func detectionTrial(ctx context.Context, sc *scene, prefix string, n int) ([]time.Duration, error) {
	eps := make([]*probe.Endpoint, n)
	var err error
	for i := range eps {
		if eps[i], err = probe.NewEndpoint(ctx, "media", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		defer eps[i].Close()
	}
	names, err := sc.addNodes(ctx, prefix, n, 10, func(i int) string { return eps[i].Address() })
	if err != nil {
		return nil, err
	}
	if err := sc.enroll(ctx, names, true); err != nil {
		return nil, err
	}
	if err := sc.waitHealth(ctx, names, nodes.HealthUp, 30*time.Second); err != nil {
		return nil, err
	}
	time.Sleep(3 * time.Second) // a few clean probe rounds
	killed := map[string]time.Time{}
	var mu sync.Mutex
	go func() {
		for i, name := range names {
			time.Sleep(time.Duration(rand.Int64N(int64(400 * time.Millisecond))))
			_ = eps[i].Close()
			sc.agent(name).kill()
			mu.Lock()
			killed[name] = time.Now()
			mu.Unlock()
		}
	}()
	want := map[string]bool{}
	for _, name := range names {
		want[name] = true
	}
	downAt := map[string]time.Time{}
	limit := time.Now().Add(time.Duration(n)*400*time.Millisecond + 30*time.Second)
	for len(downAt) < n && time.Now().Before(limit) {
		list, err := sc.svc.ListNodes(ctx, nodes.NodeFilter{Health: nodes.HealthDown})
		if err != nil {
			return nil, err
		}
		now := time.Now()
		for _, x := range list {
			if _, ok := downAt[x.Name]; !ok && want[x.Name] {
				downAt[x.Name] = now
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	var detect []time.Duration
	mu.Lock()
	for name, k := range killed {
		if d, ok := downAt[name]; ok {
			detect = append(detect, d.Sub(k))
		}
	}
	mu.Unlock()
	if len(detect) < n {
		return nil, fmt.Errorf("only %d of %d killed nodes found down", len(detect), n)
	}
	for _, name := range names {
		if _, err := sc.svc.RemoveNode(ctx, actor, name, true); err != nil {
			return nil, err
		}
	}
	return detect, nil
}
