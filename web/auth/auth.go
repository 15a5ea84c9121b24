package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
	"github.com/callplane/callplane/nodes/safetext"
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
	// unknown user, a disabled user and a wrong password.
	ErrBadCredentials = problem.New(problem.ErrUnauthorized, "those details are not correct")
	// ErrThrottled: too many recent failures for this account or address.
	ErrThrottled = problem.New(problem.ErrThrottled, "too many failed attempts; wait a few minutes and try again")
	// ErrSetupDone: an account exists, so first-run setup is closed.
	ErrSetupDone = errors.New("setup is already complete")
)

// throttleWindow is how long a failed attempt counts (throttle.go).
const throttleWindow = 15 * time.Minute

// User is a signed-in account.
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

// Service manages accounts and sessions.
type Service struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	q    *dbsqlc.Queries

	IdleTimeout     time.Duration
	AbsoluteTimeout time.Duration

	mu        sync.Mutex
	setupCode string

	budget *budget
	hasher *hasher
}

// NewService returns an account service.
func NewService(pool *pgxpool.Pool, log *slog.Logger) *Service {
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

func (s *Service) audit(ctx context.Context, tx dbsqlc.DBTX, actor, addr, action, target, result, detail string) {
	if err := s.q.AuditInsert(ctx, tx, dbsqlc.AuditInsertParams{
		Actor: actor, Action: action, Target: target, Result: result, SourceAddr: addr, Detail: detail,
	}); err != nil {
		s.log.Error("write audit row", "action", action, "err", err)
	}
}

// NormalizeEmail is the stored form of an e-mail address: trimmed and in
// lower case, so addresses that differ only in case are one account (a
// unique index on lower(email) holds it in the database too).
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

func validateNew(email, password, role string) (string, problem.FieldErrors) {
	fe := problem.FieldErrors{}
	email = NormalizeEmail(email)
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email || len(email) > 254 {
		fe["email"] = "enter a valid email address"
	}
	if msg := ValidatePassword(password); msg != "" {
		fe["password"] = msg
	}
	if !slices.Contains(Roles, role) {
		fe["role"] = "role must be owner, admin or viewer"
	}
	return email, fe
}

// Setup creates the first owner account, guarded by the setup code.
func (s *Service) Setup(ctx context.Context, code, email, password, addr string) (User, error) {
	email, fe := validateNew(email, password, RoleOwner)
	if strings.TrimSpace(code) == "" {
		fe["code"] = "enter the setup code from the call manager's log"
	}
	if len(fe) > 0 {
		return User{}, fe
	}
	// Setup-code guesses are throttled per address like sign-ins.
	ids, err := s.reserve(ctx, []limitKey{{"setup:" + addr, slowSetup}})
	if err != nil {
		if errors.Is(err, ErrThrottled) {
			s.audit(ctx, s.pool, email, addr, "setup", email, "throttled", "")
		}
		return User{}, err
	}
	want := s.SetupCode()
	if subtle.ConstantTimeCompare([]byte(strings.ToUpper(strings.TrimSpace(code))), []byte(want)) != 1 {
		s.audit(ctx, s.pool, email, addr, "setup", email, "error", "wrong setup code")
		return User{}, ErrBadCredentials
	}
	s.release(ctx, ids)
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return User{}, err
	}
	var u dbsqlc.User
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise concurrent setups so only one owner is created.
		if _, err := tx.Exec(ctx, "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return err
		}
		n, err := s.q.UserCount(ctx, tx)
		if err != nil {
			return err
		}
		if n > 0 {
			return ErrSetupDone
		}
		if u, err = s.q.UserInsert(ctx, tx, dbsqlc.UserInsertParams{Email: email, PasswordHash: hash, Role: RoleOwner}); err != nil {
			return err
		}
		s.audit(ctx, tx, email, addr, "setup", email, "ok", "first owner account created")
		return nil
	})
	return User{ID: u.ID, Email: u.Email, Role: u.Role}, err
}

// AddUser creates an account.
func (s *Service) AddUser(ctx context.Context, actor, addr, email, password, role string) (User, error) {
	email, fe := validateNew(email, password, role)
	if len(fe) > 0 {
		return User{}, fe
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return User{}, err
	}
	var u dbsqlc.User
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		u, err = s.q.UserInsert(ctx, tx, dbsqlc.UserInsertParams{Email: email, PasswordHash: hash, Role: role})
		if errors.Is(db.Translate(err), db.ErrConflict) {
			return problem.FieldErrors{"email": "an account with this email already exists"}
		}
		if err != nil {
			return err
		}
		s.audit(ctx, tx, actor, addr, "user.add", email, "ok", "role "+role)
		return nil
	})
	return User{ID: u.ID, Email: u.Email, Role: u.Role}, err
}

// ListUsers lists accounts.
func (s *Service) ListUsers(ctx context.Context) ([]dbsqlc.User, error) {
	return s.q.UserList(ctx, s.pool)
}

// SetRole changes a user's role. The last active owner cannot be demoted.
func (s *Service) SetRole(ctx context.Context, actor User, addr string, id int64, role string) error {
	if !slices.Contains(Roles, role) {
		return problem.FieldErrors{"role": "role must be owner, admin or viewer"}
	}
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		u, err := s.q.UserGet(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("user %d: %w", id, db.Translate(err))
		}
		if u.Role == RoleOwner && role != RoleOwner {
			if err := s.keepAnOwner(ctx, tx); err != nil {
				return err
			}
		}
		if role == RoleOwner && !actor.Can(RoleOwner) {
			return problem.FieldErrors{"role": "only an owner can make another owner"}
		}
		if _, err := s.q.UserSetRole(ctx, tx, dbsqlc.UserSetRoleParams{ID: id, Role: role}); err != nil {
			return err
		}
		s.audit(ctx, tx, actor.Email, addr, "user.role", u.Email, "ok", u.Role+" -> "+role)
		return nil
	})
}

func (s *Service) keepAnOwner(ctx context.Context, tx pgx.Tx) error {
	n, err := s.q.UserCountActiveOwners(ctx, tx)
	if err != nil {
		return err
	}
	if n <= 1 {
		return problem.FieldErrors{"role": "the last active owner cannot be demoted or disabled"}
	}
	return nil
}

// SetDisabled disables or re-enables a user; disabling ends all of the
// user's sessions at once.
func (s *Service) SetDisabled(ctx context.Context, actor User, addr string, id int64, disabled bool) error {
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		u, err := s.q.UserGet(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("user %d: %w", id, db.Translate(err))
		}
		if disabled && u.Role == RoleOwner && u.DisabledAt == nil {
			if err := s.keepAnOwner(ctx, tx); err != nil {
				return err
			}
		}
		if _, err := s.q.UserSetDisabled(ctx, tx, dbsqlc.UserSetDisabledParams{ID: id, Disabled: disabled}); err != nil {
			return err
		}
		action, detail := "user.enable", ""
		if disabled {
			action = "user.disable"
			n, err := s.q.SessionDeleteByUser(ctx, tx, id)
			if err != nil {
				return err
			}
			detail = fmt.Sprintf("%d sessions ended", n)
		}
		s.audit(ctx, tx, actor.Email, addr, action, u.Email, "ok", detail)
		return nil
	})
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Login checks an email and password and starts a new session, returning
// its cookie token. Unknown users, disabled users and wrong passwords get
// the same error after the same work. Throttled attempts (ErrThrottled,
// with the wait) and attempts that find no free hasher (ErrBusy) do no
// password work at all.
func (s *Service) Login(ctx context.Context, email, password, addr, userAgent string) (string, User, error) {
	email = strings.TrimSpace(email)
	acct := strings.ToLower(email)
	refuse := func(err error, detail string) (string, User, error) {
		s.audit(ctx, s.pool, email, addr, "login", email, "throttled", detail)
		return "", User{}, err
	}
	if ok, wait := s.budget.take(addr, time.Now()); !ok {
		return refuse(&ThrottledError{Wait: wait}, "client over its sign-in budget")
	}
	keys := []limitKey{{"pair:" + acct + "|" + addr, slowPair}, {"addr:" + addr, slowAddress}}
	known, err := s.q.LoginKnownCheck(ctx, s.pool, "known:"+acct+"|"+addr)
	if err != nil {
		return "", User{}, err
	}
	if !known {
		keys = append(keys, limitKey{"acct:" + acct, slowAccount})
	}
	ids, err := s.reserve(ctx, keys)
	if err != nil {
		if errors.Is(err, ErrThrottled) {
			return refuse(err, "sign-in slowdown")
		}
		return "", User{}, err
	}
	u, err := s.q.UserGetByEmail(ctx, s.pool, email)
	ok := false
	switch {
	case err == nil:
		ok, err = s.hasher.check(ctx, password, u.PasswordHash)
		ok = ok && u.DisabledAt == nil
	case db.IsNotFound(err):
		// Do the same work as a real check so timing says nothing.
		_, err = s.hasher.check(ctx, password, dummyHash)
	}
	if err != nil {
		// Not checked (no hasher, database gone): not a failed guess.
		s.release(ctx, ids)
		return "", User{}, err
	}
	if !ok {
		s.audit(ctx, s.pool, email, addr, "login", email, "error", "bad credentials")
		return "", User{}, ErrBadCredentials
	}
	s.release(ctx, ids)
	_ = s.q.LoginFailureClear(ctx, s.pool, keys[0].key)
	if err := s.q.LoginKnownUpsert(ctx, s.pool, "known:"+acct+"|"+addr); err != nil {
		s.log.Error("remember sign-in address", "err", err)
	}
	token, err := s.newSession(ctx, u.ID, addr, userAgent)
	if err != nil {
		return "", User{}, err
	}
	s.audit(ctx, s.pool, u.Email, addr, "login", u.Email, "ok", "")
	return token, User{ID: u.ID, Email: u.Email, Role: u.Role}, nil
}

func (s *Service) newSession(ctx context.Context, userID int64, addr, ua string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	ua = safetext.Sanitize(ua, 200)
	err := s.q.SessionInsert(ctx, s.pool, dbsqlc.SessionInsertParams{
		IDHash: hashToken(token), UserID: userID, ExpiresAt: time.Now().Add(s.AbsoluteTimeout), SourceAddr: addr, UserAgent: ua,
	})
	return token, err
}

// Session returns the user of a live session, or ErrBadCredentials.
// It enforces the idle and absolute timeouts and disabled accounts.
func (s *Service) Session(ctx context.Context, token string) (User, error) {
	if token == "" || len(token) > 100 {
		return User{}, ErrBadCredentials
	}
	row, err := s.q.SessionGet(ctx, s.pool, hashToken(token))
	if err != nil {
		if db.IsNotFound(err) {
			return User{}, ErrBadCredentials
		}
		return User{}, err
	}
	now := time.Now()
	if row.DisabledAt != nil || now.After(row.ExpiresAt) || now.Sub(row.LastSeenAt) > s.IdleTimeout {
		_ = s.q.SessionDelete(ctx, s.pool, row.IDHash)
		return User{}, ErrBadCredentials
	}
	if now.Sub(row.LastSeenAt) > time.Minute {
		_ = s.q.SessionTouch(ctx, s.pool, row.IDHash)
	}
	return User{ID: row.UserID, Email: row.Email, Role: row.Role}, nil
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, token string, u User, addr string) error {
	if err := s.q.SessionDelete(ctx, s.pool, hashToken(token)); err != nil {
		return err
	}
	s.audit(ctx, s.pool, u.Email, addr, "logout", u.Email, "ok", "")
	return nil
}

// Prune deletes expired sessions and old sign-in failures.
func (s *Service) Prune(ctx context.Context) {
	_, _ = s.q.SessionDeleteExpired(ctx, s.pool, s.IdleTimeout.Seconds())
	_ = s.q.LoginFailurePrune(ctx, s.pool)
	_ = s.q.LoginKnownPrune(ctx, s.pool)
	s.budget.prune(time.Now())
}
