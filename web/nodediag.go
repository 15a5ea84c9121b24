package web

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/nodes/settings"
)

// The node page leads with what is wrong and what to do (diagnose), then
// the node's history as charts (nodeHistory).

// diagnosis is the node page's first word on a node.
type diagnosis struct {
	Level string // ok, info, warning, critical
	Title string
	Lines []string // what is known
	Todo  []string // what to do
}

// healthSettings are the checker's settings, or the built-in ones when
// they cannot be read.
func (h *Handler) healthSettings(ctx context.Context) settings.Settings {
	if h.Settings != nil {
		if s, err := h.Settings.Load(ctx); err == nil {
			return s
		}
	}
	return settings.Builtin()
}

func (h *Handler) nodeHistory(r *http.Request, v *nodeView) error {
	ctx, now := r.Context(), time.Now()
	st := h.healthSettings(ctx)
	var items int64
	for _, c := range v.Carrying {
		items += c.N
	}
	v.Diagnosis = diagnose(v.Node, st, items, now)
	buckets, err := h.Nodes.ProbeBuckets(ctx, v.Node.ID, probeWindow, probeBucket)
	if err != nil {
		return err
	}
	v.Latency = latencyChart(buckets, st.ProbeTimeout, now)
	v.Success = successChart(buckets, st.FailThreshold, now)
	samples, err := h.Nodes.LoadHistory(ctx, v.Node.ID, loadWindow)
	if err != nil {
		return err
	}
	v.Load = loadChart(samples, v.Node, now)
	ups, err := h.Nodes.NodeUptime(ctx, v.Node.ID, 24*time.Hour, 7*24*time.Hour)
	if err != nil {
		return err
	}
	v.Uptime = nil
	for _, u := range ups {
		v.Uptime = append(v.Uptime, nodesUptime(u))
	}
	return nil
}

// diagnose says what is wrong with a node and what to do about it, most
// pressing first. It is a pure function of the node row, the checker's
// settings and the work the node carries.
func diagnose(n nodes.Node, st settings.Settings, items int64, now time.Time) diagnosis {
	wk := nodes.WorkKindFor(n.Kind)
	work := "no work"
	if items > 0 {
		work = nodes.WorkNoun(wk, items)
	}
	inMaint := n.InMaintenance(now)
	policy := st.PolicyFor(n.Kind)
	checks := fmt.Sprintf("%s failed in a row (down at %d)", plural(int64(n.ConsecutiveFail), "check"), st.FailThreshold)
	cause := dash(n.LastProbeDetail)
	hbStale := n.Enrolled() && n.LastHeartbeatAt != nil && now.Sub(*n.LastHeartbeatAt) > st.HeartbeatStale
	d := diagnosis{}
	switch {
	case n.AdminState == nodes.StateDisabled:
		d = diagnosis{Level: "info", Title: "Disabled: the node takes no work",
			Lines: []string{"Its work was moved away when it was disabled. It is still probed (health " + n.Health + ") but raises no alerts."},
			Todo:  []string{"Enable it when it is ready to take work again."}}
	case !n.Enrolled():
		d = diagnosis{Level: "info", Title: "No agent has enrolled yet",
			Lines: []string{"The node stays pending and takes no work until its agent enrols and its checks pass."},
			Todo:  []string{"Create a join token and run the join command on the node's host."}}
	case n.Health == nodes.HealthDown:
		d = diagnosis{Level: "critical", Title: "Down for " + since(n.HealthChangedAt) + ": " + cause,
			Lines: []string{checks + " (since " + fmtTime(n.HealthChangedAt) + ").", "It carries " + work + "."}}
		switch {
		case inMaint:
			d.Lines = append(d.Lines, "In maintenance until "+fmtTimePtr(n.MaintenanceUntil)+": no alert and no automatic failover.")
		case items > 0 && policy == settings.PolicyManual:
			d.Todo = append(d.Todo, "Disable the node to move its "+work+" to other "+n.Kind+" nodes (manual failover for "+n.Kind+").")
		case items > 0:
			d.Lines = append(d.Lines, "Automatic failover moves its work as soon as other "+n.Kind+" nodes have room.")
		}
		d.Todo = append(d.Todo, "Check the service at "+n.Address+" and the agent on the host; the node is used again after "+
			fmt.Sprint(st.RecoverThreshold)+" passed checks.")
	case n.Flapping:
		d = diagnosis{Level: "warning", Title: "Flapping: held down until it is stable",
			Lines: []string{"Its health changed too often (" + fmt.Sprint(st.FlapLimit) + " times within " + st.FlapWindow.String() + ")."},
			Todo:  []string{"Find why the service comes and goes (network, overload) before trusting it with work."}}
	case n.Health == nodes.HealthSuspect:
		d = diagnosis{Level: "warning", Title: "Failing checks: " + cause,
			Lines: []string{checks + ".", "It carries " + work + " and takes no new work while suspect."},
			Todo:  []string{"Check the service at " + n.Address + " on the node's host."}}
	case hbStale:
		d = diagnosis{Level: "warning", Title: "Agent silent: last heartbeat " + ago(n.LastHeartbeatAt),
			Lines: []string{"The service probe still decides its health; the agent does not receive new assignments while silent."},
			Todo:  []string{"Check the nodeagent process and its connection to the call manager on the host."}}
	case n.Health == nodes.HealthPending:
		d = diagnosis{Level: "info", Title: "Waiting for its first checks",
			Lines: []string{"The agent enrolled " + ago(n.EnrolledAt) + "; the node takes work once " + fmt.Sprint(st.RecoverThreshold) + " checks pass."}}
	case inMaint:
		d = diagnosis{Level: "info", Title: "In maintenance until " + fmtTimePtr(n.MaintenanceUntil),
			Lines: []string{"Up and carrying " + work + "; no alerts and no automatic failover until then. " + n.MaintenanceReason}}
	case n.AdminState == nodes.StateDraining:
		d = diagnosis{Level: "info", Title: "Draining: keeps its work, takes no new work",
			Lines: []string{"It carries " + work + "."},
			Todo:  []string{"Disable or remove it once its work has ended."}}
	default:
		d = diagnosis{Level: "ok", Title: "Healthy: up for " + since(n.HealthChangedAt),
			Lines: []string{"Checks pass (" + cause + "); it carries " + work + "."}}
	}
	for i, l := range d.Lines {
		d.Lines[i] = strings.TrimSpace(l)
	}
	return d
}
