package nodes

import (
	"context"
	"fmt"

	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/problem"
)

// addressOwner returns the name of another node (not selfID) whose service
// address points at the same socket as address, or "". It takes the
// registry lock first, so two concurrent registrations of one address
// cannot both pass.
func (s *Service) addressOwner(ctx context.Context, tx dbsqlc.DBTX, selfID int64, kind, address string) (string, error) {
	want, err := probe.SocketOf(kind, address)
	if err != nil {
		return "", nil // Validate reports a bad address
	}
	if err := s.q.NodeRegistryLock(ctx, tx); err != nil {
		return "", err
	}
	rows, err := s.q.NodeAddresses(ctx, tx)
	if err != nil {
		return "", err
	}
	for _, r := range rows {
		if r.ID == selfID {
			continue
		}
		if got, err := probe.SocketOf(r.Kind, r.Address); err == nil && got.Key() == want.Key() {
			return r.Name, nil
		}
	}
	return "", nil
}

// addressInUse is the field error for an address another node has.
func addressInUse(owner, kind, address string) problem.FieldErrors {
	sock, _ := probe.SocketOf(kind, address)
	return problem.FieldErrors{"address": fmt.Sprintf("node %s already uses this service address (%s); two nodes cannot share one service socket", owner, sock.Key())}
}

// RunCommand is the command that starts a node's agent once it has
// joined. --probe-listen makes the agent serve the node kind's probe on
// the node's service socket, for a node whose own server does not answer
// the probe there; the probe and the agent's heartbeat must agree before
// the node is up.
func RunCommand(kind, address, stateDir string) string {
	cmd := "nodeagent run --state-dir " + stateDir
	if sock, err := probe.SocketOf(kind, address); err == nil {
		cmd += " --probe-listen " + sock.HostPort()
	}
	return cmd
}
