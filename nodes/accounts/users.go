package accounts

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

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
func (s *Service) Setup(ctx context.Context, code, email, password, addr string) (Account, error) {
	email, fe := validateNew(email, password, RoleOwner)
	if strings.TrimSpace(code) == "" {
		fe["code"] = "enter the setup code from the call manager's log"
	}
	if len(fe) > 0 {
		return Account{}, fe
	}
	// Setup-code guesses are throttled per address like sign-ins.
	ids, err := s.reserve(ctx, []limitKey{{"setup:" + addr, slowSetup}})
	if err != nil {
		if errors.Is(err, ErrThrottled) {
			s.audit(ctx, s.pool, email, addr, "setup", email, resultThrottled, "")
		}
		return Account{}, err
	}
	want := s.SetupCode()
	if subtle.ConstantTimeCompare([]byte(strings.ToUpper(strings.TrimSpace(code))), []byte(want)) != 1 {
		s.audit(ctx, s.pool, email, addr, "setup", email, resultError, "wrong setup code")
		return Account{}, ErrBadCredentials
	}
	s.release(ctx, ids)
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return Account{}, err
	}
	var u dbsqlc.User
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise concurrent setups so only one owner is created.
		if err := s.q.UserTableLock(ctx, tx); err != nil {
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
		s.audit(ctx, tx, email, addr, "setup", email, resultOK, "first owner account created")
		return nil
	})
	return accountFromRow(u), err
}

// AddUser creates an account; actor names who does it in the audit log.
func (s *Service) AddUser(ctx context.Context, actor, addr, email, password, role string) (Account, error) {
	email, fe := validateNew(email, password, role)
	if len(fe) > 0 {
		return Account{}, s.refused(ctx, actor, addr, "user.add", email, fe)
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return Account{}, err
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
		s.audit(ctx, tx, actor, addr, "user.add", email, resultOK, "role "+role)
		return nil
	})
	return accountFromRow(u), s.refused(ctx, actor, addr, "user.add", email, err)
}

// ListUsers lists accounts by email.
func (s *Service) ListUsers(ctx context.Context) ([]Account, error) {
	rows, err := s.q.UserList(ctx, s.pool)
	if err != nil {
		return nil, err
	}
	out := make([]Account, len(rows))
	for i, r := range rows {
		out[i] = accountFromRow(r)
	}
	return out, nil
}

// SetRole changes a user's role. The last active owner cannot be
// demoted, and only an owner can make another owner; a refusal is
// audited.
func (s *Service) SetRole(ctx context.Context, actor User, addr string, id int64, role string) error {
	target := fmt.Sprintf("user %d", id)
	if !slices.Contains(Roles, role) {
		return s.refused(ctx, actor.Email, addr, "user.role", target, problem.FieldErrors{"role": "role must be owner, admin or viewer"})
	}
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		u, err := s.q.UserGet(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("user %d: %w", id, db.Translate(err))
		}
		target = u.Email
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
		s.audit(ctx, tx, actor.Email, addr, "user.role", u.Email, resultOK, u.Role+" -> "+role)
		return nil
	})
	return s.refused(ctx, actor.Email, addr, "user.role", target, err)
}

// keepAnOwner refuses a change that would leave no active owner. The
// count locks the active owners' rows until the transaction ends, so two
// owners demoting or disabling each other at once cannot both succeed:
// the second counts again after the first commits.
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
// user's sessions at once. The last active owner cannot be disabled; a
// refusal is audited.
func (s *Service) SetDisabled(ctx context.Context, actor User, addr string, id int64, disabled bool) error {
	action := "user.enable"
	if disabled {
		action = "user.disable"
	}
	target := fmt.Sprintf("user %d", id)
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		u, err := s.q.UserGet(ctx, tx, id)
		if err != nil {
			return fmt.Errorf("user %d: %w", id, db.Translate(err))
		}
		target = u.Email
		if disabled && u.Role == RoleOwner && u.DisabledAt == nil {
			if err := s.keepAnOwner(ctx, tx); err != nil {
				return err
			}
		}
		if _, err := s.q.UserSetDisabled(ctx, tx, dbsqlc.UserSetDisabledParams{ID: id, Disabled: disabled}); err != nil {
			return err
		}
		detail := ""
		if disabled {
			n, err := s.q.SessionDeleteByUser(ctx, tx, id)
			if err != nil {
				return err
			}
			detail = fmt.Sprintf("%d sessions ended", n)
		}
		s.audit(ctx, tx, actor.Email, addr, action, u.Email, resultOK, detail)
		return nil
	})
	return s.refused(ctx, actor.Email, addr, action, target, err)
}
