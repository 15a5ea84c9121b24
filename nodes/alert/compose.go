package alert

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Change is one node health change to report.
type Change struct {
	// Node is the node's name, Kind its kind (media, ivr, queue, meeting,
	// im) and Address its service address.
	Node, Kind, Address string
	// From and To are health states: pending, up, suspect or down.
	From, To string
	// At is when the change happened. For a recovery, Since is when the
	// node went down; otherwise it may be left zero.
	At, Since time.Time
	// Reason says what failed, e.g. "SIP OPTIONS timeout after 800ms;
	// heartbeat 7s old".
	Reason string
	// Policy is the failover policy of the node's kind: auto or manual.
	Policy string
	// WorkOutcome says what happened to the node's work, e.g. "12 calls
	// moved to media-2 (8), media-3 (4)".
	WorkOutcome string
	// Maintenance is set when the node was in maintenance, so the change
	// may be expected.
	Maintenance bool
	// Reminder marks a repeated down alert for a node still down that
	// nobody acknowledged.
	Reminder bool
	// AckedBy and AckNote name who acknowledged the node's down alert,
	// and what they said, on the recovery email.
	AckedBy, AckNote string
	// NoRoom: under manual failover, the other nodes lack the room to take
	// the node's work, so disabling it leaves work waiting unplaced.
	NoRoom bool
}

// Labels of changes, as they appear in subjects.
const (
	labelDown      = "DOWN"
	labelSuspect   = "SUSPECT"
	labelRecovered = "RECOVERED"
	labelUp        = "UP"
	labelStillDown = "STILL DOWN"
	labelAgentLost = "AGENT LOST"
	labelAgentBack = "AGENT BACK"
)

// Compose writes the alert email for changes: one change gives a focused
// email about that node, several give one grouped email that lists each.
// portalURL is the portal's base URL (https://host:port), used for links
// to node pages. It returns the subject and the plain-text body; times are
// in UTC.
func Compose(portalURL string, changes []Change) (subject, text string) {
	return composeAt(time.Now(), portalURL, changes)
}

func composeAt(now time.Time, portalURL string, changes []Change) (subject, text string) {
	portalURL = strings.TrimRight(strings.TrimSpace(portalURL), "/")
	now = now.UTC()
	switch len(changes) {
	case 0:
		return "[Callplane] No node changes", "No node health changed.\n" + footer(now, portalURL)
	case 1:
		return composeOne(now, portalURL, changes[0])
	}

	sorted := slices.Clone(changes)
	slices.SortStableFunc(sorted, func(a, b Change) int {
		if d := labelRank(groupLabel(a)) - labelRank(groupLabel(b)); d != 0 {
			return d
		}
		return strings.Compare(a.Node, b.Node)
	})
	var order []string
	count := map[string]int{}
	for _, c := range sorted {
		l := groupLabel(c)
		if count[l] == 0 {
			order = append(order, l)
		}
		count[l]++
	}
	parts := make([]string, len(order))
	for i, l := range order {
		parts[i] = fmt.Sprintf("%d %s", count[l], l)
	}
	// "7 nodes DOWN, 2 RECOVERED": the noun once, on the first figure.
	noun := "nodes"
	if count[order[0]] == 1 {
		noun = "node"
	}
	parts[0] = fmt.Sprintf("%d %s %s", count[order[0]], noun, order[0])
	subject = "[Callplane] " + strings.Join(parts, ", ")

	var b strings.Builder
	fmt.Fprintf(&b, "%d node health changes: %s.\n\n", len(sorted), strings.Join(parts, ", "))
	for _, l := range order {
		fmt.Fprintf(&b, "%s (%d):\n", l, count[l])
		for _, c := range sorted {
			if groupLabel(c) != l {
				continue
			}
			fmt.Fprintf(&b, "  - %s (%s) %s, %s\n", c.Node, orUnknown(c.Kind), orNone(c.Address), summary(now, c))
		}
		b.WriteString("\n")
	}

	var manual []Change
	noRoom := false
	for _, c := range sorted {
		if label(c) == labelDown && c.Policy == "manual" {
			manual = append(manual, c)
			noRoom = noRoom || c.NoRoom
		}
	}
	if len(manual) > 0 {
		b.WriteString("ACTION NEEDED (manual failover): the work of these nodes stays on them\n")
		b.WriteString("until you disable them. Open each node page and disable the node, so its\n")
		if noRoom {
			b.WriteString("work moves to the remaining active nodes as far as they have room (the rest\n")
			b.WriteString("waits unplaced until capacity returns; see Work for each node):\n")
		} else {
			b.WriteString("work moves to the remaining active nodes:\n")
		}
		for _, c := range manual {
			fmt.Fprintf(&b, "  - %s: %s\n", c.Node, nodeURL(portalURL, c.Node))
		}
		b.WriteString("\n")
	}

	b.WriteString("Details\n=======\n")
	for _, c := range sorted {
		fmt.Fprintf(&b, "\n%s: %s (%s)\n", groupLabel(c), c.Node, orUnknown(c.Kind))
		details(&b, now, c)
		if todo := whatToDo(portalURL, c); todo != "" {
			b.WriteString("  What to do:\n")
			b.WriteString(indent(todo, "  "))
		}
	}
	b.WriteString(footer(now, portalURL))
	return subject, b.String()
}

func composeOne(now time.Time, portalURL string, c Change) (subject, text string) {
	l := label(c)
	subject = fmt.Sprintf("[Callplane] %s: %s (%s)", l, c.Node, orUnknown(c.Kind))
	if l == labelRecovered {
		if d, ok := downFor(c); ok {
			subject += " after " + human(d)
		}
	}
	if c.Maintenance {
		subject += " [maintenance]"
	}
	if c.Reminder {
		subject += " [reminder: still down]"
	}

	var b strings.Builder
	switch l {
	case labelDown:
		fmt.Fprintf(&b, "Node %s (%s) is DOWN.\n\n", c.Node, orUnknown(c.Kind))
	case labelRecovered:
		if d, ok := downFor(c); ok {
			fmt.Fprintf(&b, "Node %s (%s) has RECOVERED after %s down.\n\n", c.Node, orUnknown(c.Kind), human(d))
		} else {
			fmt.Fprintf(&b, "Node %s (%s) has RECOVERED.\n\n", c.Node, orUnknown(c.Kind))
		}
	case labelAgentLost:
		fmt.Fprintf(&b, "The agent of node %s (%s) is LOST: it has not heartbeated since %s,\nbut the node's service still answers its probe, so nothing was failed over.\n\n",
			c.Node, orUnknown(c.Kind), stamp(now, c.Since))
	case labelAgentBack:
		fmt.Fprintf(&b, "The agent of node %s (%s) is heartbeating again.\n\n", c.Node, orUnknown(c.Kind))
	default:
		fmt.Fprintf(&b, "Node %s (%s) is now %s.\n\n", c.Node, orUnknown(c.Kind), strings.ToLower(l))
	}
	details(&b, now, c)
	if todo := whatToDo(portalURL, c); todo != "" {
		b.WriteString("\nWhat to do\n")
		b.WriteString(todo)
	}
	b.WriteString(footer(now, portalURL))
	return subject, b.String()
}

// details writes the facts of one change as aligned "Field: value" lines.
func details(b *strings.Builder, now time.Time, c Change) {
	row := func(k, v string) { fmt.Fprintf(b, "  %-12s%s\n", k+":", v) }
	row("Node", c.Node)
	row("Kind", orUnknown(c.Kind))
	row("Address", orNone(c.Address))
	row("Health", fmt.Sprintf("%s -> %s", orUnknown(c.From), orUnknown(c.To)))
	switch label(c) {
	case labelDown:
		row("Down since", stamp(now, c.At))
	case labelRecovered:
		if !c.Since.IsZero() {
			row("Down from", stamp(now, c.Since))
		}
		row("Up since", stamp(now, c.At))
		if d, ok := downFor(c); ok {
			row("Downtime", human(d))
		}
	default:
		row("Changed", stamp(now, c.At))
	}
	if c.Reason != "" {
		if label(c) == labelRecovered {
			row("Cause", c.Reason)
		} else {
			row("Failed", c.Reason)
		}
	}
	row("Failover", policyText(c.Kind, c.Policy))
	row("Work", orDefault(c.WorkOutcome, "nothing reported"))
	if c.Reminder {
		row("Reminder", "the node is still down and nobody has acknowledged it; acknowledge it to stop reminders")
	}
	if c.AckedBy != "" {
		row("Acked by", c.AckedBy+": "+c.AckNote)
	}
	if c.Maintenance {
		row("Note", "the node is in maintenance; this change may be expected")
	}
}

// whatToDo tells the reader what to do about c, or "" when nothing is
// needed.
func whatToDo(portalURL string, c Change) string {
	page := nodeURL(portalURL, c.Node)
	switch label(c) {
	case labelDown:
		switch c.Policy {
		case "manual":
			if c.NoRoom {
				return fmt.Sprintf("  Failover for %s nodes is manual: the node's work stays on it until you act.\n"+
					"  The remaining active %s nodes do not have room for all of it: if you disable\n"+
					"  the node at %s, the work that does not fit waits unplaced\n"+
					"  until capacity returns (add or enable a node, or raise a capacity).\n"+
					"  Enable it again once it is repaired.\n", orUnknown(c.Kind), orUnknown(c.Kind), page)
			}
			return fmt.Sprintf("  Failover for %s nodes is manual: the node's work stays on it until you act.\n"+
				"  Open %s and disable the node;\n"+
				"  its work then moves to the remaining active %s nodes.\n"+
				"  Enable it again once it is repaired.\n", orUnknown(c.Kind), page, orUnknown(c.Kind))
		case "auto":
			return fmt.Sprintf("  Failover for %s nodes is automatic: the node's work was moved to the\n"+
				"  remaining active nodes (see Work above). No action is needed for the work;\n"+
				"  find out why the node failed: %s\n", orUnknown(c.Kind), page)
		default:
			return fmt.Sprintf("  Check the node and its work: %s\n", page)
		}
	case labelSuspect:
		return fmt.Sprintf("  The node is failing checks but is not down yet. Watch it: %s\n", page)
	case labelAgentLost:
		return fmt.Sprintf("  Check the nodeagent process on the node and its path to the call managers.\n"+
			"  Until the agent is back the node's work is not moved, but new work placed on\n"+
			"  it is not started and no changes reach it: %s\n", page)
	case labelRecovered:
		if c.Policy == "manual" {
			return fmt.Sprintf("  If you disabled the node while it was down, its work stays where it was\n"+
				"  moved; enable the node again when you trust it: %s\n", page)
		}
		return fmt.Sprintf("  Nothing to do: the node takes new work again while it is enabled.\n"+
			"  Node page: %s\n", page)
	}
	return ""
}

// summary is the one-line description used in grouped emails.
func summary(now time.Time, c Change) string {
	var s string
	switch label(c) {
	case labelDown:
		s = "down since " + stamp(now, c.At)
	case labelRecovered:
		s = "up since " + stamp(now, c.At)
		if d, ok := downFor(c); ok {
			s += ", after " + human(d) + " down"
		}
	default:
		s = fmt.Sprintf("%s -> %s at %s", orUnknown(c.From), orUnknown(c.To), stamp(now, c.At))
	}
	if c.Reason != "" && label(c) != labelRecovered {
		s += "; " + c.Reason
	}
	if c.AckedBy != "" {
		s += "; acknowledged by " + c.AckedBy
	}
	if c.Reminder {
		s += " [reminder]"
	}
	if c.Maintenance {
		s += " [maintenance]"
	}
	return s
}

// ComposeTest writes the email sent by the settings page's "send test
// email" button.
func ComposeTest(portalURL string) (subject, text string) {
	return composeTestAt(time.Now(), portalURL)
}

func composeTestAt(now time.Time, portalURL string) (subject, text string) {
	portalURL = strings.TrimRight(strings.TrimSpace(portalURL), "/")
	now = now.UTC()
	var b strings.Builder
	b.WriteString("This is a test email from Callplane.\n\n")
	b.WriteString("If you can read it, alert emails reach this address: the SMTP settings\n")
	b.WriteString("and the recipient list work. Node down and recovery alerts will come\n")
	b.WriteString("from the same sender; make sure your mail filters let them through.\n\n")
	fmt.Fprintf(&b, "  Sent at:   %s\n", now.Format(time.RFC3339))
	if portalURL != "" {
		fmt.Fprintf(&b, "  Settings:  %s/settings\n", portalURL)
	}
	b.WriteString(footer(now, portalURL))
	return "[Callplane] Test email", b.String()
}

// ComposeCapacity writes the alert for work of kind that fits on no node:
// unplaced work units are waiting for capacity. With unplaced <= 0 it
// writes the all-clear.
func ComposeCapacity(kind string, unplaced int, portalURL string) (subject, text string) {
	return composeCapacityAt(time.Now(), kind, unplaced, portalURL)
}

func composeCapacityAt(now time.Time, kind string, unplaced int, portalURL string) (subject, text string) {
	portalURL = strings.TrimRight(strings.TrimSpace(portalURL), "/")
	now = now.UTC()
	kind = orUnknown(kind)
	var b strings.Builder
	if unplaced <= 0 {
		subject = fmt.Sprintf("[Callplane] CAPACITY OK: all %s work placed", kind)
		fmt.Fprintf(&b, "All %s work is placed again: the capacity shortage is over.\n", kind)
		b.WriteString(footer(now, portalURL))
		return subject, b.String()
	}
	units := workUnits(kind, unplaced)
	subject = fmt.Sprintf("[Callplane] NO CAPACITY: %s unplaced (%s)", units, kind)
	fmt.Fprintf(&b, "%s fit on no %s node and are waiting UNPLACED.\n\n", capitalize(units), kind)
	fmt.Fprintf(&b, "No enabled %s node that is up has free capacity for them. They are placed\n", kind)
	b.WriteString("automatically as soon as capacity returns.\n\n")
	b.WriteString("What to do\n")
	fmt.Fprintf(&b, "  Add %s capacity: bring down nodes back up, enable drained or disabled\n", kind)
	b.WriteString("  nodes, raise a node's capacity, or register and join a new node.\n")
	if portalURL != "" {
		fmt.Fprintf(&b, "  Nodes:     %s/nodes\n", portalURL)
		fmt.Fprintf(&b, "  Work:      %s/work\n", portalURL)
	}
	fmt.Fprintf(&b, "\n  As of:     %s\n", now.Format(time.RFC3339))
	b.WriteString(footer(now, portalURL))
	return subject, b.String()
}

// workUnits names n units of work of a node kind ("5 calls").
func workUnits(kind string, n int) string {
	one, many := "work item", "work items"
	switch kind {
	case "media":
		one, many = "call", "calls"
	case "ivr":
		one, many = "IVR", "IVRs"
	case "queue":
		one, many = "queue", "queues"
	case "meeting":
		one, many = "meeting", "meetings"
	case "im":
		one, many = "IM shard", "IM shards"
	}
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func footer(now time.Time, portalURL string) string {
	s := "\n-- \nCallplane alert, written " + now.Format(time.RFC3339) + ".\n"
	if portalURL != "" {
		s += "Portal: " + portalURL + "/  Alert settings: " + portalURL + "/settings\n"
	}
	return s
}

// label classifies a change for subjects and grouping.
func label(c Change) string {
	switch {
	case c.To == "down":
		return labelDown
	case c.To == "suspect":
		return labelSuspect
	case c.To == "up" && (c.From == "down" || c.From == "suspect"):
		return labelRecovered
	case c.To == "up":
		return labelUp
	case c.To == "agent lost":
		return labelAgentLost
	case c.To == "agent back":
		return labelAgentBack
	case c.To == "":
		return "CHANGED"
	}
	return strings.ToUpper(c.To)
}

// groupLabel is label, with reminders apart ("STILL DOWN"), for the
// sections and counts of a grouped email.
func groupLabel(c Change) string {
	if c.Reminder && label(c) == labelDown {
		return labelStillDown
	}
	return label(c)
}

func labelRank(l string) int {
	switch l {
	case labelDown:
		return 0
	case labelStillDown:
		return 1
	case labelSuspect:
		return 2
	case labelRecovered:
		return 3
	case labelAgentLost:
		return 4
	case labelAgentBack:
		return 5
	case labelUp:
		return 6
	}
	return 7
}

// downFor is how long a recovered node was down.
func downFor(c Change) (time.Duration, bool) {
	if c.Since.IsZero() || c.At.IsZero() || c.At.Before(c.Since) {
		return 0, false
	}
	return c.At.Sub(c.Since), true
}

// stamp formats t as UTC RFC 3339 with how long ago it was.
func stamp(now, t time.Time) string {
	if t.IsZero() {
		return "unknown time"
	}
	s := t.UTC().Format(time.RFC3339)
	switch d := now.Sub(t); {
	case d < time.Second && d > -time.Second:
		return s + " (just now)"
	case d < 0:
		return s + " (in " + human(-d) + ")"
	default:
		return s + " (" + human(d) + " ago)"
	}
}

// human formats d for people: "45s", "2m13s", "1h5m", "3d4h".
func human(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}

func policyText(kind, policy string) string {
	switch policy {
	case "auto":
		return "auto (work on a down " + orUnknown(kind) + " node is moved at once)"
	case "manual":
		return "manual (work stays until an administrator disables the node)"
	}
	return orUnknown(policy)
}

func nodeURL(portalURL, name string) string {
	return portalURL + "/nodes/" + url.PathEscape(name)
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func orUnknown(s string) string { return orDefault(s, "unknown") }
func orNone(s string) string    { return orDefault(s, "(no address)") }

func orDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
