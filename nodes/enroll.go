package nodes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/probe"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/safetext"
)

// Join token lifetimes.
const (
	DefaultTokenTTL = time.Hour
	MaxTokenTTL     = 7 * 24 * time.Hour
	// CredentialOverlap is how long an old node credential keeps working
	// after a rotation, so an agent that misses one answer is not locked out.
	CredentialOverlap = 5 * time.Minute
)

// JoinToken is a freshly created join token; Token is shown once.
type JoinToken struct {
	ID        string
	Token     string
	Node      string
	ExpiresAt time.Time
}

// ErrEnrolled refuses a join token for a node whose agent has enrolled:
// a token would replace the running agent, which must be asked for.
var ErrEnrolled = errors.New("the node's agent has already enrolled")

// CreateJoinToken creates a one-time join token for a registered node
// whose agent has not enrolled yet (problem.FieldErrors{"node"} otherwise).
func (s *Service) CreateJoinToken(ctx context.Context, actor Actor, nodeName string, ttl time.Duration) (JoinToken, error) {
	return s.createJoinToken(ctx, actor, nodeName, ttl, false)
}

// CreateReplacementToken creates a one-time join token for a node whose
// agent has enrolled: the agent that uses it replaces the running one,
// whose credential is revoked at that moment.
func (s *Service) CreateReplacementToken(ctx context.Context, actor Actor, nodeName string, ttl time.Duration) (JoinToken, error) {
	return s.createJoinToken(ctx, actor, nodeName, ttl, true)
}

func (s *Service) createJoinToken(ctx context.Context, actor Actor, nodeName string, ttl time.Duration, replace bool) (JoinToken, error) {
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < time.Minute || ttl > MaxTokenTTL {
		return JoinToken{}, problem.FieldErrors{"ttl": "lifetime must be between 1m and 168h (7 days)"}
	}
	var jt JoinToken
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := s.q.NodeGetByName(ctx, tx, nodeName)
		if err != nil {
			return fmt.Errorf("node %q: %w", nodeName, db.Translate(err))
		}
		detail := ""
		if n.EnrolledAt != nil {
			if !replace {
				return problem.FieldErrors{"replace": "the agent of " + n.Name + " has already enrolled: a new token would replace it, so say so explicitly (replace the agent)"}
			}
			detail = " replaces the enrolled agent"
		}
		token, id, hash := newSecretToken(PrefixJoin)
		jt = JoinToken{ID: id, Token: token, Node: n.Name, ExpiresAt: time.Now().Add(ttl)}
		if err := s.q.JoinTokenInsert(ctx, tx, dbsqlc.JoinTokenInsertParams{
			ID: id, NodeID: n.ID, SecretHash: hash, CreatedBy: actor.Name, ExpiresAt: jt.ExpiresAt,
		}); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "token.create", n.Name, "token "+PrefixJoin+id+" expires "+jt.ExpiresAt.UTC().Format(time.RFC3339)+detail)
	})
	return jt, err
}

// RevokeJoinToken revokes an unused token.
func (s *Service) RevokeJoinToken(ctx context.Context, actor Actor, id string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := s.q.JoinTokenRevoke(ctx, tx, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("token %s: %w (or already used or revoked)", id, ErrNotFound)
		}
		return s.audit(ctx, tx, actor, "token.revoke", PrefixJoin+id, "")
	})
}

// JoinTokenInfo is a join token as lists show it: never its secret or
// hash.
type JoinTokenInfo struct {
	ID         string
	NodeID     int64
	NodeName   string
	CreatedBy  string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	UsedAt     *time.Time
	UsedByAddr string
	RevokedAt  *time.Time
}

// ListJoinTokens lists join tokens, newest first.
func (s *Service) ListJoinTokens(ctx context.Context) ([]JoinTokenInfo, error) {
	rows, err := s.q.JoinTokenList(ctx, s.pool)
	return fromRows(rows, func(r dbsqlc.JoinTokenListRow) JoinTokenInfo {
		return JoinTokenInfo{ID: r.ID, NodeID: r.NodeID, NodeName: r.NodeName, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt,
			ExpiresAt: r.ExpiresAt, UsedAt: r.UsedAt, UsedByAddr: r.UsedByAddr, RevokedAt: r.RevokedAt}
	}), err
}

// PruneTokens deletes join tokens that expired more than a week ago.
func (s *Service) PruneTokens(ctx context.Context) (int64, error) {
	return s.q.JoinTokenPrune(ctx, s.pool)
}

// EnrollRequest is what an agent sends to join.
type EnrollRequest struct {
	Token      string
	Address    string
	Version    string
	RemoteAddr string
}

// EnrollResult is what a joined agent gets back.
type EnrollResult struct {
	NodeID     int64
	NodeName   string
	Kind       string
	Credential string
}

// Enroll consumes a join token and issues the node's credential. Every
// failure is ErrUnauthorized; nothing changes unless it succeeds. The
// token is consumed by one conditional UPDATE, so of many concurrent
// enrolments with one token exactly one wins.
func (s *Service) Enroll(ctx context.Context, req EnrollRequest) (EnrollResult, error) {
	id, secret, ok := ParseToken(PrefixJoin, req.Token)
	if !ok {
		return EnrollResult{}, ErrUnauthorized
	}
	row, err := s.q.JoinTokenGet(ctx, s.pool, id)
	if err != nil {
		if db.IsNotFound(err) {
			return EnrollResult{}, ErrUnauthorized
		}
		return EnrollResult{}, err
	}
	if !secretMatches(secret, row.SecretHash) {
		return EnrollResult{}, ErrUnauthorized
	}
	var res EnrollResult
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		nodeID, err := s.q.JoinTokenConsume(ctx, tx, dbsqlc.JoinTokenConsumeParams{ID: id, SecretHash: row.SecretHash, Addr: req.RemoteAddr})
		if err != nil {
			if db.IsNotFound(err) {
				return ErrUnauthorized
			}
			return err
		}
		n, err := s.q.NodeGet(ctx, tx, nodeID)
		if err != nil {
			return err
		}
		// One enrolment per token, and one token per enrolment: the
		// node's other unused tokens end now.
		if _, err := s.q.JoinTokenEndForNode(ctx, tx, dbsqlc.JoinTokenEndForNodeParams{NodeID: nodeID, KeepID: id}); err != nil {
			return err
		}
		addr := ""
		if req.Address != "" && req.Address != n.Address && probe.ValidateAddress(n.Kind, req.Address) == nil {
			// An address another node has is ignored: the node keeps the
			// one it was registered with.
			owner, err := s.addressOwner(ctx, tx, n.ID, n.Kind, req.Address)
			if err != nil {
				return err
			}
			if owner == "" {
				addr = req.Address
			}
		}
		if n, err = s.q.NodeEnroll(ctx, tx, dbsqlc.NodeEnrollParams{ID: n.ID, AgentVersion: safetext.Sanitize(req.Version, MaxAgentVersion), Address: addr}); err != nil {
			return err
		}
		cred, err := s.issueCredential(ctx, tx, n.ID, 0)
		if err != nil {
			return err
		}
		// Earlier credentials of the node are revoked: make every
		// instance forget them.
		if err := s.notifyAccess(ctx, tx, n.ID); err != nil {
			return err
		}
		res = EnrollResult{NodeID: n.ID, NodeName: n.Name, Kind: n.Kind, Credential: cred}
		actor := Actor{Name: "node:" + n.Name, Addr: req.RemoteAddr}
		if err := s.audit(ctx, tx, actor, "node.enroll", n.Name, "join token "+PrefixJoin+id+" agent "+n.AgentVersion); err != nil {
			return err
		}
		return s.event(ctx, tx, &n, "enrol", "info", actor.Name,
			fmt.Sprintf("Node %s enrolled from %s (agent %s)", n.Name, req.RemoteAddr, n.AgentVersion))
	})
	if err == nil {
		s.creds.dropNodes([]int64{res.NodeID})
	}
	return res, err
}

// issueCredential creates a node credential. With overlap 0 every other
// credential of the node is revoked; otherwise they expire after overlap.
func (s *Service) issueCredential(ctx context.Context, tx pgx.Tx, nodeID int64, overlap time.Duration) (string, error) {
	cred, id, hash := newSecretToken(PrefixCredential)
	if overlap == 0 {
		if err := s.q.CredentialRevokeAll(ctx, tx, nodeID); err != nil {
			return "", err
		}
	}
	if err := s.q.CredentialInsert(ctx, tx, dbsqlc.CredentialInsertParams{ID: id, NodeID: nodeID, SecretHash: hash}); err != nil {
		return "", err
	}
	if overlap > 0 {
		if err := s.q.CredentialExpireOthers(ctx, tx, dbsqlc.CredentialExpireOthersParams{NodeID: nodeID, KeepID: id, OverlapSeconds: overlap.Seconds()}); err != nil {
			return "", err
		}
	}
	return cred, nil
}

// NodeAuth is an authenticated agent.
type NodeAuth struct {
	NodeID          int64
	Name            string
	Kind            string
	AdminState      string
	RotateRequested bool
}

// AuthNode checks an agent's bearer credential. A bad credential is
// ErrUnauthorized; a disabled node is ErrForbidden (with the auth filled).
func (s *Service) AuthNode(ctx context.Context, credential string) (NodeAuth, error) {
	id, secret, ok := ParseToken(PrefixCredential, credential)
	if !ok {
		return NodeAuth{}, ErrUnauthorized
	}
	if e, ok := s.creds.get(id); ok {
		if !secretMatches(secret, e.hash) {
			return NodeAuth{}, ErrUnauthorized
		}
		return e.auth, authState(e.auth)
	}
	row, err := s.q.CredentialAuth(ctx, s.pool, id)
	if err != nil {
		if db.IsNotFound(err) {
			return NodeAuth{}, ErrUnauthorized
		}
		return NodeAuth{}, err
	}
	if !secretMatches(secret, row.SecretHash) {
		return NodeAuth{}, ErrUnauthorized
	}
	a := NodeAuth{NodeID: row.NodeID, Name: row.Name, Kind: row.Kind, AdminState: row.AdminState, RotateRequested: row.RotateRequested}
	until := time.Now().Add(s.creds.lifetime())
	if row.ExpiresAt != nil && row.ExpiresAt.Before(until) {
		until = *row.ExpiresAt
	}
	s.creds.put(id, credEntry{hash: row.SecretHash, auth: a, validUntil: until})
	return a, authState(a)
}

// authState refuses a disabled node with ErrForbidden.
func authState(a NodeAuth) error {
	if a.AdminState == StateDisabled {
		return ErrForbidden
	}
	return nil
}

// RequestRotation asks the node's agent to take a new credential on its
// next heartbeat; the old one keeps working for CredentialOverlap.
func (s *Service) RequestRotation(ctx context.Context, actor Actor, nodeName string) error {
	var rotateID int64
	defer func() {
		if rotateID != 0 {
			s.creds.dropNodes([]int64{rotateID})
		}
	}()
	return s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := s.q.NodeGetByName(ctx, tx, nodeName)
		if err != nil {
			return fmt.Errorf("node %q: %w", nodeName, db.Translate(err))
		}
		if n.EnrolledAt == nil {
			return problem.FieldErrors{"node": "the node has no agent enrolled yet"}
		}
		if _, err := s.q.NodeSetRotateRequested(ctx, tx, dbsqlc.NodeSetRotateRequestedParams{ID: n.ID, RotateRequested: true}); err != nil {
			return err
		}
		// Every instance must see the request on the agent's next heartbeat.
		if err := s.notifyAccess(ctx, tx, n.ID); err != nil {
			return err
		}
		rotateID = n.ID
		return s.audit(ctx, tx, actor, "node.credential.rotate", n.Name, "requested")
	})
}

// RotateCredential issues the new credential a rotation asked for.
func (s *Service) RotateCredential(ctx context.Context, a NodeAuth) (string, error) {
	var cred string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if cred, err = s.issueCredential(ctx, tx, a.NodeID, CredentialOverlap); err != nil {
			return err
		}
		if _, err := s.q.NodeSetRotateRequested(ctx, tx, dbsqlc.NodeSetRotateRequestedParams{ID: a.NodeID, RotateRequested: false}); err != nil {
			return err
		}
		return s.audit(ctx, tx, Actor{Name: "node:" + a.Name}, "node.credential.rotate", a.Name, "issued")
	})
	s.creds.dropNodes([]int64{a.NodeID})
	return cred, err
}

// API token scopes: read tokens may only read (GET); admin tokens may
// change the cluster.
const (
	ScopeRead  = "read"
	ScopeAdmin = "admin"
)

// MaxAPITokenTTL bounds an API token's lifetime when one is given.
const MaxAPITokenTTL = 5 * 366 * 24 * time.Hour

// APIToken is a newly created API token; Token is shown once.
type APIToken struct {
	ID        string
	Name      string
	Scope     string
	ExpiresAt *time.Time
	Token     string
}

// APITokenInput asks for an API token: a name, a scope (admin when
// empty) and a lifetime (0: no expiry).
type APITokenInput struct {
	Name  string
	Scope string
	TTL   time.Duration
}

// CreateAPIToken creates an admin API token without expiry for scripts.
func (s *Service) CreateAPIToken(ctx context.Context, actor Actor, name string) (APIToken, error) {
	return s.CreateScopedAPIToken(ctx, actor, APITokenInput{Name: name, Scope: ScopeAdmin})
}

// CreateScopedAPIToken creates an API token with a scope and an optional
// expiry. Nothing is written when the input is invalid.
func (s *Service) CreateScopedAPIToken(ctx context.Context, actor Actor, in APITokenInput) (APIToken, error) {
	in.Name = strings.TrimSpace(in.Name)
	if in.Scope == "" {
		in.Scope = ScopeAdmin
	}
	fe := problem.FieldErrors{}
	if in.Name == "" || len(in.Name) > 100 {
		fe.Add("name", "name is required (at most 100 characters)")
	}
	if in.Scope != ScopeRead && in.Scope != ScopeAdmin {
		fe.Add("scope", "scope must be read or admin")
	}
	if in.TTL < 0 || in.TTL > MaxAPITokenTTL {
		fe.Add("ttl", "ttl must be positive and at most 5 years (0: no expiry)")
	}
	if err := fe.Err(); err != nil {
		return APIToken{}, err
	}
	var expires *time.Time
	if in.TTL > 0 {
		t := time.Now().Add(in.TTL)
		expires = &t
	}
	token, id, hash := newSecretToken(PrefixAPI)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := s.q.APITokenInsertScoped(ctx, tx, dbsqlc.APITokenInsertScopedParams{
			ID: id, Name: in.Name, SecretHash: hash, CreatedBy: actor.Name, Scope: in.Scope, ExpiresAt: expires,
		}); err != nil {
			return err
		}
		detail := in.Name + " scope=" + in.Scope
		if expires != nil {
			detail += " expires=" + expires.UTC().Format(time.RFC3339)
		}
		return s.audit(ctx, tx, actor, "apitoken.create", PrefixAPI+id, detail)
	})
	return APIToken{ID: id, Name: in.Name, Scope: in.Scope, ExpiresAt: expires, Token: token}, err
}

// APICaller is who an API token speaks for.
type APICaller struct {
	ID    string
	Name  string
	Scope string
}

// CanWrite reports whether the token may change the cluster.
func (c APICaller) CanWrite() bool { return c.Scope == ScopeAdmin }

// AuthAPIToken checks an API token (revoked and expired ones fail) and
// returns its name and scope.
func (s *Service) AuthAPIToken(ctx context.Context, token string) (APICaller, error) {
	id, secret, ok := ParseToken(PrefixAPI, token)
	if !ok {
		return APICaller{}, ErrUnauthorized
	}
	row, err := s.q.APITokenGet(ctx, s.pool, id)
	if err != nil {
		if db.IsNotFound(err) {
			return APICaller{}, ErrUnauthorized
		}
		return APICaller{}, err
	}
	if !secretMatches(secret, row.SecretHash) {
		return APICaller{}, ErrUnauthorized
	}
	if apiTouches.due(id, time.Now()) {
		_ = s.q.APITokenTouch(ctx, s.pool, id)
	}
	return APICaller{ID: id, Name: row.Name, Scope: row.Scope}, nil
}

// APITouchEvery is how often an admin API token's last-used time is
// written. Writing it on every request made every call through the admin
// API two commits, and all the requests of one script queue on the same
// token row's lock, each waiting for the previous one's WAL flush: 180
// placements a second at most. "Last used" to within a few seconds is
// what an operator needs to spot a forgotten token.
const APITouchEvery = 5 * time.Second

// apiTouches remembers, per token id, when this process last wrote the
// token's last-used time. Token ids are random, so one table serves every
// Service in the process.
var apiTouches = &touchLimiter{last: map[string]time.Time{}}

type touchLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether the token's use should be written now, and if so
// notes it.
func (t *touchLimiter) due(id string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.last[id]; ok && now.Sub(last) < APITouchEvery {
		return false
	}
	if len(t.last) > 10000 {
		for k, v := range t.last {
			if now.Sub(v) >= APITouchEvery {
				delete(t.last, k)
			}
		}
	}
	t.last[id] = now
	return true
}

// RevokeAPIToken revokes an API token.
func (s *Service) RevokeAPIToken(ctx context.Context, actor Actor, id string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		n, err := s.q.APITokenRevoke(ctx, tx, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("api token %s: %w", id, ErrNotFound)
		}
		return s.audit(ctx, tx, actor, "apitoken.revoke", PrefixAPI+id, "")
	})
}

// APITokenInfo is an API token as lists show it: never its secret or
// hash.
type APITokenInfo struct {
	ID         string
	Name       string
	Scope      string
	CreatedBy  string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
	ExpiresAt  *time.Time
}

// ListAPITokens lists API tokens with their scope, expiry and last use.
func (s *Service) ListAPITokens(ctx context.Context) ([]APITokenInfo, error) {
	rows, err := s.q.APITokenList(ctx, s.pool)
	return fromRows(rows, func(r dbsqlc.ApiToken) APITokenInfo {
		return APITokenInfo{ID: r.ID, Name: r.Name, Scope: r.Scope, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt,
			LastUsedAt: r.LastUsedAt, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt}
	}), err
}
