package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/callplane/callplane/nodes/agentproto"
)

// ErrJoinRefused is wrapped by Join's error when the call manager refuses the
// join token (unknown, wrong secret, expired, revoked or already used; the
// server deliberately does not say which).
var ErrJoinRefused = errors.New("join refused by server")

// JoinOptions are the inputs of Join.
type JoinOptions struct {
	Servers  []string // every call manager's base URL, https://HOST:PORT
	Token    string   // one-time join token, cpj_<id>.<secret>
	CAPin    string   // sha256:HEX of the server's public key
	StateDir string   // where the identity is stored
	Address  string   // the node's service address to report; empty keeps the registered one
	Version  string   // agent version reported to the server
	Logger   *slog.Logger
}

// Join enrols this node with the first call manager of opts.Servers that
// answers and stores the returned identity, with every server URL, in
// opts.StateDir/state.json (mode 0600, directory 0700).
//
// Everything that can be checked locally is checked before the token leaves
// the machine: the token and pin formats, the server URL, and that the state
// directory is writable (a one-time token spent on an identity that cannot be
// saved would be lost). The TLS handshake fails before any request when the
// server's key does not match the pin. A failed join leaves an existing
// state directory as it was; a successful one replaces its identity.
func Join(ctx context.Context, opts JoinOptions) (*State, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ValidateToken(opts.Token); err != nil {
		return nil, err
	}
	if err := agentproto.ValidatePin(opts.CAPin); err != nil {
		return nil, err
	}
	servers, err := ParseServers(opts.Servers)
	if err != nil {
		return nil, err
	}
	api, err := newAPIClient(servers, opts.CAPin, "", opts.Version, log)
	if err != nil {
		return nil, err
	}
	defer api.close()

	if old, err := Load(opts.StateDir); err == nil {
		log.Info("state dir holds an identity; it is replaced if this join succeeds",
			"node", old.NodeName, "node_id", old.NodeID)
	}
	pending, err := beginStateWrite(opts.StateDir)
	if err != nil {
		return nil, err
	}

	log.Info("enrolling", "servers", strings.Join(servers, ","), "token_id", TokenID(opts.Token))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := api.enroll(ctx, agentproto.EnrollRequest{Token: opts.Token, Address: opts.Address, Version: opts.Version})
	if err != nil {
		pending.abort()
		return nil, joinError(err)
	}
	st := &State{
		NodeID:     resp.NodeID,
		NodeName:   resp.NodeName,
		Kind:       resp.Kind,
		Servers:    servers,
		CAPin:      opts.CAPin,
		Credential: resp.Credential,
		JoinedAt:   time.Now().UTC().Truncate(time.Second),
	}
	if err := st.validate(); err != nil {
		pending.abort()
		return nil, fmt.Errorf("enrol: server sent an unusable identity: %w", err)
	}
	if err := pending.commit(st); err != nil {
		return nil, fmt.Errorf("enrolled as node %s but could not save the identity (create a new join token): %w", st.NodeName, err)
	}
	log.Info("enrolled", "node", st.NodeName, "node_id", st.NodeID, "kind", st.Kind)
	return st, nil
}

// joinError turns an enrol failure into the one-line reason an operator
// reads.
func joinError(err error) error {
	var pe *agentproto.PinMismatchError
	if errors.As(err, &pe) {
		return pe // already says all an operator needs
	}
	var se *statusError
	if !errors.As(err, &se) {
		return fmt.Errorf("enrol: %w", err)
	}
	switch se.Status {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: %s", ErrJoinRefused, se.Message)
	case http.StatusTooManyRequests:
		return errors.New("enrol: throttled by server, try again in a minute")
	case http.StatusBadRequest:
		return fmt.Errorf("enrol: server rejected the request as malformed: %s", se.Message)
	default:
		return fmt.Errorf("enrol: %w", err)
	}
}
