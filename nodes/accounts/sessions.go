package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/safetext"
)

// hashToken is what the sessions table stores of a session token.
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
		s.audit(ctx, s.pool, email, addr, "login", email, resultThrottled, detail)
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
		s.audit(ctx, s.pool, email, addr, "login", email, resultError, "bad credentials")
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
	s.audit(ctx, s.pool, u.Email, addr, "login", u.Email, resultOK, "")
	return token, accountFromRow(u).User, nil
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
	return userFromSessionRow(row), nil
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, token string, u User, addr string) error {
	if err := s.q.SessionDelete(ctx, s.pool, hashToken(token)); err != nil {
		return err
	}
	s.audit(ctx, s.pool, u.Email, addr, "logout", u.Email, resultOK, "")
	return nil
}

// Sessions lists a user's live sessions, newest use first, marking the
// one of token.
func (s *Service) Sessions(ctx context.Context, u User, token string) ([]Session, error) {
	rows, err := s.q.SessionListByUser(ctx, s.pool, u.ID)
	if err != nil {
		return nil, err
	}
	cur := hashToken(token)
	out := make([]Session, len(rows))
	for i, r := range rows {
		out[i] = sessionFromRow(r, cur)
	}
	return out, nil
}

// EndOtherSessions signs the user out everywhere but the session of token.
func (s *Service) EndOtherSessions(ctx context.Context, u User, addr, token string) (int64, error) {
	var ended int64
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if ended, err = s.q.SessionDeleteOthers(ctx, tx, dbsqlc.SessionDeleteOthersParams{UserID: u.ID, KeepHash: hashToken(token)}); err != nil {
			return err
		}
		s.audit(ctx, tx, u.Email, addr, "user.sessions.end", u.Email, resultOK, fmt.Sprintf("%d other sessions ended", ended))
		return nil
	})
	return ended, err
}

// Prune deletes expired sessions and old sign-in failures.
func (s *Service) Prune(ctx context.Context) {
	_, _ = s.q.SessionDeleteExpired(ctx, s.pool, s.IdleTimeout.Seconds())
	_ = s.q.LoginFailurePrune(ctx, s.pool)
	_ = s.q.LoginKnownPrune(ctx, s.pool)
	s.budget.prune(time.Now())
}
