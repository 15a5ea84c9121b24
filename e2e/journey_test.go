package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/callplane/callplane/nodes/alert/smtptest"
)

// nodeSpec is a node the journey registers in the portal.
type nodeSpec struct {
	name, kind, capacity string
	listen               string // where its agent serves the probe endpoint
	address              string // the registered service address
}

func journeyNodes(t *testing.T) []*nodeSpec {
	specs := []*nodeSpec{
		{name: "media-1", kind: "media", capacity: "20"},
		{name: "media-2", kind: "media", capacity: "20"},
		{name: "ivr-1", kind: "ivr", capacity: "10"},
		{name: "ivr-2", kind: "ivr", capacity: "10"},
		{name: "queue-1", kind: "queue", capacity: "10"},
		{name: "meeting-1", kind: "meeting", capacity: "10"},
		{name: "im-1", kind: "im", capacity: "10"},
	}
	for _, s := range specs {
		switch s.kind {
		case "media", "ivr", "queue":
			s.listen = freeSIP(t)
			s.address = s.listen
		case "meeting":
			s.listen = freeTCP(t)
			s.address = "http://" + s.listen + "/"
		case "im":
			s.listen = freeTCP(t)
			s.address = s.listen
		}
	}
	return specs
}

// mails returns the messages whose subject contains every word.
func mails(s *smtptest.Server, words ...string) []smtptest.Received {
	var out []smtptest.Received
	for _, m := range s.Messages() {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(m.Subject, w)
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func subjects(s *smtptest.Server) string {
	var b []string
	for _, m := range s.Messages() {
		b = append(b, m.Subject)
	}
	return strings.Join(b, " | ")
}

// TestAdminJourney drives the administrator's whole journey over two
// call manager instances, real node agents, an SMTP sink and Chromium.
func TestAdminJourney(t *testing.T) {
	requireChromium(t)
	start := time.Now()
	step := func(format string, args ...any) {
		t.Logf("[%5.1fs] step: %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	c := newCluster(t, 2)
	first := c.cms[0]
	b := newBrowser(t)
	base := first.url

	step("first-run setup with the code from %s's log", first.id)
	code := first.setupCode(t)
	b.open(base+"/", tid("setup-form"))
	b.fill("#f-code", code, "#f-email", ownerEmail, "#f-password", ownerPassword)
	b.click(tid("setup-submit"))
	b.waitTextHas(tid("alert-info"), "Owner account created", 20*time.Second)

	step("sign in")
	b.signIn(base, ownerEmail, ownerPassword)

	specs := journeyNodes(t)
	step("register %d nodes of every kind through the form", len(specs))
	for _, s := range specs {
		b.registerNode(base, s.name, s.kind, s.address, s.capacity)
	}

	step("create a join token on each node page and run the command it shows")
	agents := map[string]*agent{}
	for _, s := range specs {
		b.open(base+"/nodes/"+s.name, tid("node-page"))
		b.click(tid("open-join"))
		b.click(tid("create-join-token"))
		b.run("join command of "+s.name, waitVisible(tid("join-command")))
		cmd := b.text(tid("join-command"))
		b.click(tid("close-join"))
		agents[s.name] = c.enrol(s.name, cmd, s.listen)
	}

	step("see every node go up in the portal")
	b.open(base+"/nodes", tid("nodes-table"))
	for _, s := range specs {
		b.waitTextIs(tid("node-row-"+s.name)+" "+tid("health"), "up", 30*time.Second)
	}
	b.waitTextIs(tid("node-row-media-1")+" "+tid("admin-state"), "enabled", time.Second)

	step("place work through the admin API")
	token := c.cli("apitoken", "create", "--name", "e2e-journey")
	if !strings.HasPrefix(token, "cpa_") {
		t.Fatalf("apitoken create printed %q, want a cpa_ token", token)
	}
	type item struct{ kind, ref string }
	var items []item
	for i := 1; i <= 6; i++ {
		items = append(items, item{"call", fmt.Sprintf("call-%d", i)})
	}
	for _, r := range []string{"ivr-a", "ivr-b", "ivr-c", "ivr-d"} {
		items = append(items, item{"ivr", r})
	}
	items = append(items, item{"queue", "queue-sales"}, item{"queue", "queue-support"},
		item{"meeting", "meeting-standup"}, item{"meeting", "meeting-board"},
		item{"im", "im-shard-1"}, item{"im", "im-shard-2"})
	for i, it := range items {
		var out map[string]any
		// Alternate instances: both serve the admin API on one database.
		cm := c.cms[i%len(c.cms)]
		if st := c.api(cm, token, "POST", "/api/v1/work", map[string]any{"kind": it.kind, "ref": it.ref, "cost": 1}, &out); st != 201 {
			t.Fatalf("place %s %s on %s: status %d %v", it.kind, it.ref, cm.id, st, out)
		}
	}
	// The agents ack their assignments: every item becomes active.
	var work map[string]workJSON
	poll(t, 20*time.Second, "all work active", func() (bool, string) {
		work = c.work(token)
		for _, it := range items {
			if w := work[it.ref]; w.State != "active" || w.Node == "" {
				return false, fmt.Sprintf("%s is %q on %q", it.ref, w.State, w.Node)
			}
		}
		return true, ""
	})
	calls := map[string][]string{}
	for _, it := range items {
		if it.kind == "call" {
			calls[work[it.ref].Node] = append(calls[work[it.ref].Node], it.ref)
		}
	}
	if len(calls["media-1"]) == 0 || len(calls["media-2"]) == 0 {
		t.Fatalf("calls were not spread over both media nodes: %v", calls)
	}

	step("see the work in the portal (/work and the node page)")
	b.open(base+"/work", tid("work-live"))
	for _, it := range items {
		b.waitTextIs(tid("work-"+it.ref)+" "+tid("work-node"), work[it.ref].Node, 10*time.Second)
	}
	victim, survivor := "media-1", "media-2"
	b.open(base+"/nodes/"+victim, tid("node-live"))
	for _, ref := range calls[victim] {
		b.run("call "+ref+" on the page of "+victim, waitVisible(tid("work-"+ref)))
	}

	step("kill the agent of %s (SIGKILL: its SIP endpoint stops answering)", victim)
	agents[victim].kill()
	killedAt := time.Now()
	b.waitTextIs(tid("node-live")+" "+tid("health"), "down", 30*time.Second)
	step("%s is down in the portal after %v", victim, time.Since(killedAt).Round(100*time.Millisecond))
	poll(t, 20*time.Second, "calls moved to "+survivor, func() (bool, string) {
		work = c.work(token)
		for _, it := range items {
			if it.kind == "call" && work[it.ref].Node != survivor {
				return false, fmt.Sprintf("%s on %q (%s)", it.ref, work[it.ref].Node, work[it.ref].State)
			}
		}
		return true, ""
	})
	b.waitTextIs(tid("node-live")+" "+tid("carrying"), "No work.", 10*time.Second)
	b.open(base+"/nodes/"+survivor, tid("node-live"))
	for _, ref := range calls[victim] {
		b.run("moved call "+ref+" on the page of "+survivor, waitVisible(tid("work-"+ref)))
	}
	poll(t, 30*time.Second, "the down email for "+victim, func() (bool, string) {
		return len(mails(c.smtp, "DOWN", victim)) > 0, subjects(c.smtp)
	})
	down := mails(c.smtp, "DOWN", victim)[0]
	if !strings.Contains(strings.Join(down.To, ","), alertTo) {
		t.Errorf("down email went to %v, want %s", down.To, alertTo)
	}
	step("down email arrived: %q", down.Subject)

	step("disable an IVR node through the impact preview and see its work move")
	ivrSrc := work["ivr-a"].Node
	ivrDst := map[string]string{"ivr-1": "ivr-2", "ivr-2": "ivr-1"}[ivrSrc]
	var ivrOnSrc []string
	for _, it := range items {
		if it.kind == "ivr" && work[it.ref].Node == ivrSrc {
			ivrOnSrc = append(ivrOnSrc, it.ref)
		}
	}
	b.open(base+"/nodes/"+ivrSrc, tid("node-live"))
	b.setStateViaDialog("disabled", func(carrying, room string) {
		if strings.Contains(carrying, "no work") || !strings.Contains(strings.ToLower(carrying), "ivr") {
			t.Errorf("impact preview of %s carrying %d IVRs says %q", ivrSrc, len(ivrOnSrc), carrying)
		}
		if !strings.Contains(room, "fits") {
			t.Errorf("impact preview room: %q, want it to say the work fits", room)
		}
	})
	b.waitTextIs(tid("node-live")+" "+tid("carrying"), "No work.", 10*time.Second)
	b.open(base+"/work", tid("work-live"))
	for _, ref := range ivrOnSrc {
		b.waitTextIs(tid("work-"+ref)+" "+tid("work-node"), ivrDst, 10*time.Second)
	}

	step("stop the leading call manager and see the other take over")
	leaderID := b.text(tid("leader"))
	if dbLeader, err := c.leader(); err != nil || dbLeader != leaderID {
		t.Fatalf("footer says leader %q, leader_lease says %q (%v)", leaderID, dbLeader, err)
	}
	var lead, other *callManager
	for _, cm := range c.cms {
		if cm.id == leaderID {
			lead = cm
		} else {
			other = cm
		}
	}
	if lead == nil || other == nil {
		t.Fatalf("leader %q is not one of the instances", leaderID)
	}
	mailsBefore := len(c.smtp.Messages())
	// Move the browser to the instance that stays, so no page polls the
	// one that stops. The session is in Postgres: the cookie works there.
	b.open(other.url+"/", tid("dashboard-kinds"))
	b.waitTextIs(tid("instance"), other.id, time.Second)
	stoppedAt := time.Now()
	if !lead.stop(15 * time.Second) {
		t.Errorf("%s did not stop on SIGTERM within 15s", lead.id)
	}
	step("%s stopped (SIGTERM) in %v", lead.id, time.Since(stoppedAt).Round(100*time.Millisecond))
	poll(t, 30*time.Second, other.id+" leads", func() (bool, string) {
		b.open(other.url+"/", tid("dashboard-kinds"))
		got := b.text(tid("leader"))
		return got == other.id, "footer leader " + got
	})
	step("%s took over %v after %s stopped", other.id, time.Since(stoppedAt).Round(100*time.Millisecond), lead.id)
	b.waitTextIs(tid("dashboard-leader"), other.id, 5*time.Second)
	b.open(other.url+"/settings", tid("settings-leader"))
	b.waitTextHas(tid("settings-leader"), other.id, 5*time.Second)

	step("restart the agent of %s and see it recover under the new leader", victim)
	agents[victim] = c.restartAgent(agents[victim])
	b.open(other.url+"/nodes/"+victim, tid("node-live"))
	b.waitTextIs(tid("node-live")+" "+tid("health"), "up", 30*time.Second)
	poll(t, 30*time.Second, "the recovery email for "+victim, func() (bool, string) {
		return len(mails(c.smtp, "RECOVERED", victim)) > 0, subjects(c.smtp)
	})
	// Give a duplicate the time to show up: an outbox poll or two.
	time.Sleep(3 * time.Second)
	if n := len(mails(c.smtp, "DOWN", victim)); n != 1 {
		t.Errorf("%d down emails for %s, want exactly 1: %s", n, victim, subjects(c.smtp))
	}
	if n := len(mails(c.smtp, "RECOVERED", victim)); n != 1 {
		t.Errorf("%d recovery emails for %s, want exactly 1: %s", n, victim, subjects(c.smtp))
	}
	seen := map[string]int{}
	for _, m := range c.smtp.Messages() {
		seen[m.Subject+"\x00"+m.Body]++
	}
	var dups []string
	for k, n := range seen {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%dx %q", n, strings.SplitN(k, "\x00", 2)[0]))
		}
	}
	sort.Strings(dups)
	if len(dups) > 0 {
		t.Errorf("duplicate emails: %s", strings.Join(dups, ", "))
	}
	step("emails: %d before the takeover, %d after: %s", mailsBefore, len(c.smtp.Messages()), subjects(c.smtp))

	step("sign out")
	b.signOut(other.url)
	step("journey complete")
}

// restartAgent starts "nodeagent run" again for an enrolled node, as an
// operator would after a crash.
func (c *cluster) restartAgent(a *agent) *agent {
	c.t.Helper()
	p := startProc(c.t, "agent-"+a.node+"-restarted", c.dir, binDir+"/nodeagent", "run", "--state-dir", a.stateDir, "--probe-listen", a.listen)
	c.track(p)
	return &agent{proc: p, node: a.node, stateDir: a.stateDir, listen: a.listen}
}
