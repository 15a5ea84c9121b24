package accounts

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// Roles, from most to least powerful.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleViewer = "viewer"
)

// Roles lists the roles.
var Roles = []string{RoleOwner, RoleAdmin, RoleViewer}

var (
	// ErrBadCredentials is the one answer to a wrong setup code, an
	// unknown user, a disabled user, a wrong password and a dead session.
	ErrBadCredentials = problem.New(problem.ErrUnauthorized, "those details are not correct")
	// ErrThrottled: too many recent failures for this account or address.
	ErrThrottled = problem.New(problem.ErrThrottled, "too many failed attempts; wait a few minutes and try again")
	// ErrSetupDone: an account exists, so first-run setup is closed.
	ErrSetupDone = errors.New("setup is already complete")
)

// User is who a request acts as: a signed-in account.
type User struct {
	ID    int64
	Email string
	Role  string
}

// Can reports whether the user's role includes role.
func (u User) Can(role string) bool {
	rank := map[string]int{RoleViewer: 1, RoleAdmin: 2, RoleOwner: 3}
	return rank[u.Role] >= rank[role]
}

// Account is an administrator account as the user list shows it.
type Account struct {
	User
	CreatedAt  time.Time
	DisabledAt *time.Time
}

// Disabled reports whether the account may not sign in.
func (a Account) Disabled() bool { return a.DisabledAt != nil }

// Session is one of a user's live sessions, as the account page lists
// them; it never carries the token.
type Session struct {
	Current    bool
	CreatedAt  time.Time
	LastSeenAt time.Time
	SourceAddr string
	UserAgent  string
}

// Service manages accounts and sessions.
type Service struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	q    *dbsqlc.Queries

	// IdleTimeout ends a session unused this long; AbsoluteTimeout ends
	// every session this long after sign-in.
	IdleTimeout     time.Duration
	AbsoluteTimeout time.Duration

	mu        sync.Mutex
	setupCode string

	budget *budget
	hasher *hasher
}

// NewService returns an account service.
func NewService(pool *pgxpool.Pool, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{pool: pool, log: log, q: db.Q, IdleTimeout: 30 * time.Minute, AbsoluteTimeout: 12 * time.Hour,
		budget: newBudget(BudgetBurst, BudgetEvery), hasher: newHasher(HashWorkers(), HashWait)}
}

// NeedsSetup reports whether no account exists yet.
func (s *Service) NeedsSetup(ctx context.Context) (bool, error) {
	n, err := s.q.UserCount(ctx, s.pool)
	return n == 0, err
}

// SetupCode returns this instance's one-time setup code, creating it on
// first use. It is printed in the log while no account exists.
func (s *Service) SetupCode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.setupCode == "" {
		b := make([]byte, 9)
		_, _ = rand.Read(b)
		s.setupCode = strings.ToUpper(base64.RawURLEncoding.EncodeToString(b))
	}
	return s.setupCode
}

// Audit results.
const (
	resultOK        = "ok"
	resultError     = "error"
	resultThrottled = "throttled"
)

// audit writes an audit row in tx (or on the pool). A row that cannot be
// written is logged, never the secret the action was about.
func (s *Service) audit(ctx context.Context, tx dbsqlc.DBTX, actor, addr, action, target, result, detail string) {
	if err := s.q.AuditInsert(ctx, tx, dbsqlc.AuditInsertParams{
		Actor: actor, Action: action, Target: target, Result: result, SourceAddr: addr, Detail: detail,
	}); err != nil {
		s.log.Error("write audit row", "action", action, "err", err)
	}
}

// refused audits a change a rule refused (field errors: bad input, the
// last-owner guard, a role the actor may not grant) and returns err. The
// change itself rolled back, so the row is written on its own.
func (s *Service) refused(ctx context.Context, actor, addr, action, target string, err error) error {
	var fe problem.FieldErrors
	if errors.As(err, &fe) {
		s.audit(context.WithoutCancel(ctx), s.pool, actor, addr, action, target, resultError, fe.Error())
	}
	return err
}
