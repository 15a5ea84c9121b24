package agent

import (
	"errors"
	"strings"
)

const (
	tokenPrefix    = "cpj_"
	tokenIDLen     = 8
	tokenSecretMin = 32
)

var errMalformedToken = errors.New("malformed join token: want cpj_<8 chars>.<at least 32 chars>, all of [a-z0-9]")

// ValidateToken checks the shape of a join token, "cpj_<id>.<secret>" with an
// 8-character id and a secret of at least 32 characters, both of [a-z0-9].
// It runs before anything goes on the wire so that a mistyped token fails
// locally. The error never echoes the token.
func ValidateToken(token string) error {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return errMalformedToken
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || len(id) != tokenIDLen || len(secret) < tokenSecretMin || !isLowerAlnum(id) || !isLowerAlnum(secret) {
		return errMalformedToken
	}
	return nil
}

// TokenID returns the public part of a well-formed join token ("cpj_" and
// its id), the only part of a token that may be logged, or "" when the token
// is malformed.
func TokenID(token string) string {
	if ValidateToken(token) != nil {
		return ""
	}
	return token[:len(tokenPrefix)+tokenIDLen]
}

func isLowerAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
