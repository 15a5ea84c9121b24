package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/callplane/callplane/nodes"
	"github.com/callplane/callplane/server"
)

func (c *cli) userAdd(args []string) error {
	email := c.fs.String("email", "", "account email")
	role := c.fs.String("role", "admin", "owner|admin|viewer")
	if err := c.parse(args); err != nil {
		return err
	}
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("read password from stdin: nothing given")
	}
	password := strings.TrimRight(line, "\r\n")
	return c.withDB(func(env *server.Admin) error {
		u, err := env.Auth.AddUser(c.ctx, "cli", "local", *email, password, *role)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "user %s added as %s\n", u.Email, u.Role)
		return nil
	})
}

func (c *cli) nodeAdd(args []string) error {
	var in nodes.NodeInput
	c.fs.StringVar(&in.Name, "name", "", "node name")
	c.fs.StringVar(&in.Kind, "kind", "", "media|ivr|queue|meeting|im")
	c.fs.StringVar(&in.Address, "address", "", "service address")
	c.fs.StringVar(&in.Capacity, "capacity", "", "max concurrent work units")
	c.fs.StringVar(&in.Weight, "weight", "", "weight (1-1000, default 100)")
	c.fs.StringVar(&in.Region, "region", "", "region")
	c.fs.StringVar(&in.Description, "description", "", "description")
	if err := c.parse(args); err != nil {
		return err
	}
	// Validate before touching the database, so bad input fails fast.
	if _, fe := nodes.Validate(in, false); len(fe) > 0 {
		return fe
	}
	return c.withDB(func(env *server.Admin) error {
		n, err := env.Nodes.AddNode(c.ctx, nodes.ActorCLI, in)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "node %s (%s) registered at %s, capacity %d\n", n.Name, n.Kind, n.Address, n.Capacity)
		return nil
	})
}

func (c *cli) nodeList(args []string) error {
	if err := c.parse(args); err != nil {
		return err
	}
	return c.withDB(func(env *server.Admin) error {
		list, err := env.Nodes.ListNodes(c.ctx, nodes.NodeFilter{})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKIND\tADDRESS\tSTATE\tHEALTH\tLOAD\tCAPACITY\tWEIGHT\tLAST HEARTBEAT")
		for _, n := range list {
			hb := "never"
			if n.LastHeartbeatAt != nil {
				hb = n.LastHeartbeatAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", n.Name, n.Kind, n.Address, n.AdminState, n.Health, n.Used, n.Capacity, n.Weight, hb)
		}
		return tw.Flush()
	})
}

// oneName parses a command that takes one node name, before or after its flags.
func (c *cli) oneName(args []string, what string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := c.parse(args); err != nil {
		return "", err
	}
	if name == "" && c.fs.NArg() > 0 {
		name = c.fs.Arg(0)
		c.fs.Parse(c.fs.Args()[1:])
	}
	if name == "" || c.fs.NArg() > 0 {
		return "", usageError{what + " takes exactly one node name"}
	}
	return name, nil
}

func (c *cli) nodeState(action string, args []string) error {
	name, err := c.oneName(args, "node "+action)
	if err != nil {
		return err
	}
	state := map[string]string{"enable": nodes.StateEnabled, "drain": nodes.StateDraining, "disable": nodes.StateDisabled}[action]
	return c.withDB(func(env *server.Admin) error {
		n, mr, err := env.Nodes.SetAdminState(c.ctx, nodes.ActorCLI, name, state)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "node %s is now %s\n", n.Name, n.AdminState)
		if state == nodes.StateDisabled {
			fmt.Fprintln(c.stdout, mr.Summary(nodes.WorkKindFor(n.Kind)))
		}
		return nil
	})
}

func (c *cli) nodeRemove(args []string) error {
	move := c.fs.Bool("move-work", false, "move the node's work to other nodes first")
	name, err := c.oneName(args, "node remove")
	if err != nil {
		return err
	}
	return c.withDB(func(env *server.Admin) error {
		mr, err := env.Nodes.RemoveNode(c.ctx, nodes.ActorCLI, name, *move)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "node %s removed", name)
		if mr.Moved+mr.Unplaced > 0 {
			fmt.Fprintf(c.stdout, "; %d moved, %d unplaced", mr.Moved, mr.Unplaced)
		}
		fmt.Fprintln(c.stdout)
		return nil
	})
}

func (c *cli) tokenCreate(args []string) error {
	node := c.fs.String("node", "", "node name")
	ttl := c.fs.Duration("ttl", nodes.DefaultTokenTTL, "token lifetime (max 168h)")
	stateDir := c.fs.String("state-dir", "/var/lib/callplane-agent", "state dir to put in the join command")
	replace := c.fs.Bool("replace", false, "the node's agent has enrolled: make a token for a new agent that replaces it")
	if err := c.parse(args); err != nil {
		return err
	}
	if *node == "" {
		return usageError{"--node is required"}
	}
	return c.withDB(func(env *server.Admin) error {
		create := env.Nodes.CreateJoinToken
		if *replace {
			create = env.Nodes.CreateReplacementToken
		}
		jt, err := create(c.ctx, nodes.ActorCLI, *node, *ttl)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, server.JoinCommand(env.URL, jt.Token, env.Pin, *stateDir))
		fmt.Fprintf(c.stderr, "join token %s%s for node %s expires %s; it works once\n", nodes.PrefixJoin, jt.ID, jt.Node, jt.ExpiresAt.UTC().Format(time.RFC3339))
		// stdout stays the one join command scripts run; people read how
		// to start the agent after it here.
		n, err := env.Nodes.GetNode(c.ctx, *node)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "then start the agent (leave out --probe-listen when the node's own server answers on %s):\n  %s\n",
			n.Address, nodes.RunCommand(n.Kind, n.Address, *stateDir))
		return nil
	})
}

func (c *cli) apiTokenCreate(args []string) error {
	name := c.fs.String("name", "", "what the token is for")
	scope := c.fs.String("scope", nodes.ScopeAdmin, "read (GET only, /metrics) or admin")
	ttl := c.fs.Duration("ttl", 0, "lifetime, e.g. 720h (default: no expiry)")
	if err := c.parse(args); err != nil {
		return err
	}
	return c.withDB(func(env *server.Admin) error {
		t, err := env.Nodes.CreateScopedAPIToken(c.ctx, nodes.ActorCLI, nodes.APITokenInput{Name: *name, Scope: *scope, TTL: *ttl})
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, t.Token)
		expiry := "never expires"
		if t.ExpiresAt != nil {
			expiry = "expires " + t.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(c.stderr, "API token %s%s (%s, scope %s) %s\n", nodes.PrefixAPI, t.ID, t.Name, t.Scope, expiry)
		return nil
	})
}
