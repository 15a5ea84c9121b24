package alert

import (
	"fmt"
	"strings"
	"time"
)

// Disruption is a mass failure the health checker distrusts: more than a
// share of the watched nodes failed their checks in one round.
type Disruption struct {
	Failing, Total, Share int
	Nodes                 []string
	At                    time.Time
}

// ComposeDisruption writes the one alert of a disruption: what failed,
// that automatic failover and per-node alerts are held, and what to do.
func ComposeDisruption(portalURL string, d Disruption) (subject, text string) {
	return composeDisruptionAt(time.Now(), portalURL, d)
}

func composeDisruptionAt(now time.Time, portalURL string, d Disruption) (subject, text string) {
	portalURL = strings.TrimRight(strings.TrimSpace(portalURL), "/")
	now = now.UTC()
	subject = fmt.Sprintf("[Callplane] DISRUPTION: %d of %d nodes failed at once; failover held", d.Failing, d.Total)
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d watched nodes failed their health checks at once (more than %d%%).\n\n", d.Failing, d.Total, d.Share)
	b.WriteString("So many failures together are more likely a fault of the control plane or of\n")
	b.WriteString("the network between the call manager and the nodes than of the nodes\n")
	b.WriteString("themselves. Until it clears, Callplane:\n")
	b.WriteString("  - moves no work automatically (no failover), and\n")
	b.WriteString("  - sends no per-node DOWN emails (this is the one alert).\n")
	b.WriteString("Nodes still down when it clears are mailed and failed over then.\n\n")
	fmt.Fprintf(&b, "  Started:    %s\n", stamp(now, d.At))
	fmt.Fprintf(&b, "  Failing:    %s\n", strings.Join(d.Nodes, ", "))
	b.WriteString("\nWhat to do\n")
	b.WriteString("  Check the call manager's network and database, and a few of the nodes\n")
	b.WriteString("  directly. If the nodes really are down, confirm the disruption on the\n")
	b.WriteString("  settings page so failover proceeds")
	if portalURL != "" {
		fmt.Fprintf(&b, ": %s/settings", portalURL)
	}
	b.WriteString(".\n")
	b.WriteString(footer(now, portalURL))
	return subject, b.String()
}

// HookFailure is a work item whose start hook failed on a node.
type HookFailure struct {
	Node, Kind, Ref, WorkKind, Error string
	Failures                         int
	At                               time.Time
}

// ComposeHookFailure writes the alert for a node whose agent could not
// start a work item: its --on-assign hook failed after the agent's retries.
func ComposeHookFailure(portalURL string, h HookFailure) (subject, text string) {
	return composeHookFailureAt(time.Now(), portalURL, h)
}

func composeHookFailureAt(now time.Time, portalURL string, h HookFailure) (subject, text string) {
	portalURL = strings.TrimRight(strings.TrimSpace(portalURL), "/")
	now = now.UTC()
	subject = fmt.Sprintf("[Callplane] START FAILED: %s %s on %s (%s)", orUnknown(h.WorkKind), h.Ref, h.Node, orUnknown(h.Kind))
	var b strings.Builder
	fmt.Fprintf(&b, "The agent of node %s could not start %s %s: its --on-assign hook failed\n", h.Node, orUnknown(h.WorkKind), h.Ref)
	b.WriteString("after retrying with backoff.\n\n")
	fmt.Fprintf(&b, "  Node:       %s (%s)\n", h.Node, orUnknown(h.Kind))
	fmt.Fprintf(&b, "  Work:       %s %s\n", orUnknown(h.WorkKind), h.Ref)
	fmt.Fprintf(&b, "  Error:      %s\n", h.Error)
	fmt.Fprintf(&b, "  Failed at:  %s\n", stamp(now, h.At))
	b.WriteString("\nThe item goes to another node with room (or waits unplaced) and is kept off\n")
	fmt.Fprintf(&b, "%s for an hour. Further start failures on %s within 10 minutes are\n", h.Node, h.Node)
	b.WriteString("recorded on the node page without another email.\n")
	b.WriteString("\nWhat to do\n")
	b.WriteString("  Check the hook command and its log on the node")
	if portalURL != "" {
		fmt.Fprintf(&b, ": %s", nodeURL(portalURL, h.Node))
	}
	b.WriteString(".\n")
	b.WriteString(footer(now, portalURL))
	return subject, b.String()
}
