package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server"
)

// nodeEdit changes the given fields of a node and keeps the others.
// Lowering the capacity below the node's load moves work, so it needs
// --yes.
func (c *cli) nodeEdit(args []string) error {
	var in nodes.NodeInput
	set := map[string]*string{"address": &in.Address, "capacity": &in.Capacity, "weight": &in.Weight, "region": &in.Region, "description": &in.Description}
	for k, p := range set {
		c.fs.StringVar(p, k, "", "new "+k+" (unset: unchanged)")
	}
	yes := c.fs.Bool("yes", false, "accept a capacity below the node's load (the excess work moves)")
	name, err := c.oneName(args, "node edit")
	if err != nil {
		return err
	}
	given := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return c.withDB(func(env *server.Admin) error {
		n, err := env.Nodes.GetNode(c.ctx, name)
		if err != nil {
			return err
		}
		cur := map[string]string{"address": n.Address, "capacity": strconv.Itoa(int(n.Capacity)), "weight": strconv.Itoa(int(n.Weight)),
			"region": n.Region, "description": n.Description}
		for k, p := range set {
			if !given[k] {
				*p = cur[k]
			}
		}
		if cap, err := strconv.Atoi(in.Capacity); err == nil && cap > 0 && int32(cap) < n.Used && !*yes {
			return fmt.Errorf("capacity %d is below the node's load (%d units): the excess work would move; see 'callmanager node preview %s --action capacity --capacity %d', then repeat with --yes",
				cap, n.Used, n.Name, cap)
		}
		n, err = env.Nodes.UpdateNode(c.ctx, nodes.ActorCLI, name, in)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "node %s: address %s, capacity %d, weight %d, load %d\n", n.Name, n.Address, n.Capacity, n.Weight, n.Used)
		return nil
	})
}

// nodePreview prints what an action would do to a node's work, computed
// by the action's own code: the moves per destination, what would wait
// unplaced and what stays.
func (c *cli) nodePreview(args []string) error {
	action := c.fs.String("action", "", "disable, drain, remove or capacity")
	capacity := c.fs.Int("capacity", 0, "the new capacity, for --action capacity")
	asJSON := c.fs.Bool("json", false, "print the preview as JSON")
	name, err := c.oneName(args, "node preview")
	if err != nil {
		return err
	}
	switch *action {
	case nodes.ActionDisable, nodes.ActionDrain, nodes.ActionRemove, nodes.ActionCapacity:
	default:
		return usageError{"--action must be disable, drain, remove or capacity"}
	}
	return c.withDB(func(env *server.Admin) error {
		im, err := env.Nodes.PreviewChange(c.ctx, name, nodes.Action{Action: *action, Capacity: *capacity})
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(im)
		}
		units := func(items []nodes.ChangeItem) (n int64) {
			for _, it := range items {
				n += int64(it.Cost)
			}
			return n
		}
		dests := make([]string, 0, len(im.Moves))
		for d := range im.Moves {
			dests = append(dests, d)
		}
		sort.Strings(dests)
		fmt.Fprintf(c.stdout, "%s %s: %d items (%d units) on the node\n", *action, name, im.Items, im.Units)
		for _, d := range dests {
			fmt.Fprintf(c.stdout, "  move to %s: %d items (%d units)\n", d, len(im.Moves[d]), units(im.Moves[d]))
		}
		fmt.Fprintf(c.stdout, "  unplaced: %d items (%d units)\n", len(im.Unplaced), units(im.Unplaced))
		fmt.Fprintf(c.stdout, "  stays: %d items (%d units)\n", len(im.Stays), units(im.Stays))
		return nil
	})
}

// parseWhen reads an RFC 3339 time or a duration from now ("2h").
func parseWhen(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, usageError{fmt.Sprintf("--%s must be an RFC 3339 time (2030-01-02T03:04:05Z) or a duration from now (2h)", flag)}
}

func (c *cli) maintenanceAdd(args []string) error {
	start := c.fs.String("start", "", "when it starts: RFC 3339 or a duration from now (default now)")
	end := c.fs.String("end", "", "when it ends: RFC 3339 or a duration from now")
	reason := c.fs.String("reason", "", "why")
	name, err := c.oneName(args, "maintenance add")
	if err != nil {
		return err
	}
	now := time.Now()
	var in nodes.MaintenanceInput
	if in.Start, err = parseWhen("start", *start, now); err != nil {
		return err
	}
	if in.End, err = parseWhen("end", *end, now); err != nil {
		return err
	}
	if *end == "" {
		return usageError{"--end is required"}
	}
	if in.Start.IsZero() {
		in.Start = now
	}
	in.Reason = *reason
	return c.withDB(func(env *server.Admin) error {
		w, err := env.Nodes.AddMaintenance(c.ctx, nodes.ActorCLI, name, in)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "maintenance window %d on %s from %s to %s: %s\n", w.ID, name,
			w.StartsAt.UTC().Format(time.RFC3339), w.EndsAt.UTC().Format(time.RFC3339), w.Reason)
		return nil
	})
}

func (c *cli) maintenanceList(args []string) error {
	all := c.fs.Bool("all", false, "with a node: include ended and cancelled windows")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := c.parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usageError{"maintenance list takes at most one node name"}
	}
	return c.withDB(func(env *server.Admin) error {
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNODE\tSTART\tEND\tSTATE\tREASON")
		now := time.Now()
		row := func(id int64, node string, start, end time.Time, cancelled *time.Time, reason string) {
			state := "scheduled"
			switch {
			case cancelled != nil:
				state = "cancelled"
			case !end.After(now):
				state = "ended"
			case !start.After(now):
				state = "active"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", id, node, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), state, reason)
		}
		if name == "" {
			ws, err := env.Nodes.ListCurrentMaintenance(c.ctx)
			if err != nil {
				return err
			}
			for _, w := range ws {
				row(w.ID, w.NodeName, w.StartsAt, w.EndsAt, w.CancelledAt, w.Reason)
			}
		} else {
			ws, err := env.Nodes.ListMaintenance(c.ctx, name, *all)
			if err != nil {
				return err
			}
			for _, w := range ws {
				row(w.ID, name, w.StartsAt, w.EndsAt, w.CancelledAt, w.Reason)
			}
		}
		return tw.Flush()
	})
}

// oneID parses a command that takes one numeric id.
func (c *cli) oneID(args []string, what string) (int64, error) {
	var raw string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		raw, args = args[0], args[1:]
	}
	if err := c.parse(args); err != nil {
		return 0, err
	}
	if raw == "" && c.fs.NArg() == 1 {
		raw = c.fs.Arg(0)
	} else if c.fs.NArg() > 0 {
		return 0, usageError{what + " takes exactly one id"}
	}
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, usageError{what + " takes exactly one id (a number)"}
	}
	return id, nil
}

func (c *cli) maintenanceCancel(args []string) error {
	id, err := c.oneID(args, "maintenance cancel")
	if err != nil {
		return err
	}
	return c.withDB(func(env *server.Admin) error {
		w, err := env.Nodes.CancelMaintenance(c.ctx, nodes.ActorCLI, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "maintenance window %d cancelled\n", w.ID)
		return nil
	})
}

func (c *cli) alertsList(args []string) error {
	node := c.fs.String("node", "", "only this node's alerts")
	state := c.fs.String("state", "", "pending, sent or failed")
	limit := c.fs.Int("limit", 50, "how many (newest first)")
	if err := c.parse(args); err != nil {
		return err
	}
	return c.withDB(func(env *server.Admin) error {
		rows, err := env.Nodes.ListAlerts(c.ctx, nodes.AlertFilter{Node: *node, State: *state, Limit: int32(*limit)})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tTYPE\tNODE\tSTATE\tATTEMPTS\tACKNOWLEDGED")
		for _, a := range rows {
			ack := "-"
			if a.AckedAt != nil {
				ack = a.AckedBy + ": " + a.AckNote
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", a.ID, a.CreatedAt.UTC().Format(time.RFC3339), a.Type, a.NodeName, a.State, a.Attempts, ack)
		}
		return tw.Flush()
	})
}

func (c *cli) alertsAck(args []string) error {
	note := c.fs.String("note", "", "what is being done about it")
	id, err := c.oneID(args, "alerts ack")
	if err != nil {
		return err
	}
	return c.withDB(func(env *server.Admin) error {
		a, err := env.Nodes.AckAlert(c.ctx, nodes.ActorCLI, id, *note)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "alert %d (%s) acknowledged: reminders stop until it recovers\n", a.ID, a.NodeName)
		return nil
	})
}
