package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/argon2"

	"github.com/callplane/callplane/db"
	"github.com/callplane/callplane/db/dbsqlc"
	"github.com/callplane/callplane/nodes/problem"
)

// Argon2id parameters: 19 MiB, 2 passes, 1 lane (the OWASP minimum).
const (
	argonMemory  = 19 * 1024
	argonTime    = 2
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns an encoded argon2id hash of password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches an encoded hash, in
// constant time.
func CheckPassword(password, encoded string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errors.New("unsupported password hash")
	}
	var m uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false, fmt.Errorf("parse password hash: %w", err)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, err
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// dummyHash is checked for unknown users so that a sign-in takes the same
// time whether or not the account exists.
var dummyHash, _ = HashPassword("callplane-dummy-password")

// ValidatePassword checks a new password's strength.
func ValidatePassword(pw string) string {
	switch {
	case len(pw) < 12:
		return "password must be at least 12 characters"
	case len(pw) > 256:
		return "password must be at most 256 characters"
	}
	return ""
}

// ChangePassword sets a new password for the signed-in user after
// checking the current one, and ends every other session of the user
// (the one of token stays), returning how many ended. A wrong current
// password counts as a failed sign-in for throttling, so a left-open
// session cannot be used to guess; it and a new password the policy
// refuses are audited.
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
		return 0, s.refused(ctx, u.Email, addr, "user.password", u.Email, fe)
	}
	// The check shares the sign-in slowdown of this account and address.
	ids, err := s.reserve(ctx, []limitKey{{"pair:" + strings.ToLower(u.Email) + "|" + addr, slowPair}})
	if err != nil {
		if errors.Is(err, ErrThrottled) {
			s.audit(ctx, s.pool, u.Email, addr, "user.password", u.Email, resultThrottled, "")
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
		s.audit(ctx, s.pool, u.Email, addr, "user.password", u.Email, resultError, "wrong current password")
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
		s.audit(ctx, tx, u.Email, addr, "user.password", u.Email, resultOK, fmt.Sprintf("password changed; %d other sessions ended", ended))
		return nil
	})
	return ended, err
}
