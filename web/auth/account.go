package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// A signed-in user's own account: password change and sessions.

// SessionInfo is one of a user's sessions, as the account page lists them.
type SessionInfo struct {
	Current    bool
	CreatedAt  time.Time
	LastSeenAt time.Time
	SourceAddr string
	UserAgent  string
}

// Sessions lists a user's live sessions, marking the one of token.
func (s *Service) Sessions(ctx context.Context, u User, token string) ([]SessionInfo, error) {
	rows, err := s.q.SessionListByUser(ctx, s.pool, u.ID)
	if err != nil {
		return nil, err
	}
	cur := hashToken(token)
	out := make([]SessionInfo, 0, len(rows))
	for _, r := range rows {
		out = append(out, SessionInfo{Current: string(r.IDHash) == string(cur), CreatedAt: r.CreatedAt,
			LastSeenAt: r.LastSeenAt, SourceAddr: r.SourceAddr, UserAgent: r.UserAgent})
	}
	return out, nil
}

// ChangePassword sets a new password for the signed-in user after
// checking the current one, and ends every other session of the user
// (the one of token stays). A wrong current password counts as a failed
// sign-in for throttling, so a left-open session cannot be used to guess.
func (s *Service) ChangePassword(ctx context.Context, u User, addr, token, current, next, confirm string) (int64, error) {
	fe := problem.FieldErrors{}
	if current == "" {
		fe["current"] = "enter your current password"
	}
	if msg := ValidatePassword(next); msg != "" {
		fe["password"] = msg
	} else if next == current {
		fe["password"] = "choose a password different from the current one"
	}
	if confirm != next {
		fe["confirm"] = "the two new passwords differ"
	}
	if len(fe) > 0 {
		return 0, fe
	}
	// The check shares the sign-in slowdown of this account and address.
	ids, err := s.reserve(ctx, []limitKey{{"pair:" + strings.ToLower(u.Email) + "|" + addr, slowPair}})
	if err != nil {
		if errors.Is(err, ErrThrottled) {
			s.audit(ctx, s.pool, u.Email, addr, "user.password", u.Email, "throttled", "")
		}
		return 0, err
	}
	row, err := s.q.UserGet(ctx, s.pool, u.ID)
	if err != nil {
		s.release(ctx, ids)
		return 0, fmt.Errorf("user %d: %w", u.ID, db.Translate(err))
	}
	ok, err := s.hasher.check(ctx, current, row.PasswordHash)
	if err != nil {
		s.release(ctx, ids)
		return 0, err
	}
	if !ok {
		s.audit(ctx, s.pool, u.Email, addr, "user.password", u.Email, "error", "wrong current password")
		return 0, problem.FieldErrors{"current": "this is not your current password"}
	}
	s.release(ctx, ids)
	hash, err := s.hasher.hash(ctx, next)
	if err != nil {
		return 0, err
	}
	var ended int64
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.q.UserSetPassword(ctx, tx, dbsqlc.UserSetPasswordParams{ID: u.ID, PasswordHash: hash}); err != nil {
			return err
		}
		if ended, err = s.q.SessionDeleteOthers(ctx, tx, dbsqlc.SessionDeleteOthersParams{UserID: u.ID, KeepHash: hashToken(token)}); err != nil {
			return err
		}
		s.audit(ctx, tx, u.Email, addr, "user.password", u.Email, "ok", fmt.Sprintf("password changed; %d other sessions ended", ended))
		return nil
	})
	return ended, err
}

// EndOtherSessions signs the user out everywhere but the session of token.
func (s *Service) EndOtherSessions(ctx context.Context, u User, addr, token string) (int64, error) {
	var ended int64
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if ended, err = s.q.SessionDeleteOthers(ctx, tx, dbsqlc.SessionDeleteOthersParams{UserID: u.ID, KeepHash: hashToken(token)}); err != nil {
			return err
		}
		s.audit(ctx, tx, u.Email, addr, "user.sessions.end", u.Email, "ok", fmt.Sprintf("%d other sessions ended", ended))
		return nil
	})
	return ended, err
}
