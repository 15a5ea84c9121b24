package nodes

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// Token lengths: an 8-character id to look a token up by, and a secret
// of 36 characters of [a-z0-9] (about 186 bits).
const (
	TokenIDLen     = 8
	TokenSecretLen = 36
	minSecretLen   = 32
)

// Token prefixes.
const (
	PrefixJoin       = "cpj_"
	PrefixCredential = "cpn_"
	PrefixAPI        = "cpa_"
)

func randomString(n int) string {
	// rand.Text-like generation over our alphabet without modulo bias:
	// 36 does not divide 256, so reject bytes >= 252.
	out := make([]byte, 0, n)
	buf := make([]byte, n*2)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		for _, b := range buf {
			if b < 252 && len(out) < n {
				out = append(out, alphabet[b%36])
			}
		}
	}
	return string(out)
}

// newSecretToken returns a fresh "<prefix><id>.<secret>" token with its id
// and the hash to store.
func newSecretToken(prefix string) (token, id string, hash []byte) {
	id = randomString(TokenIDLen)
	secret := randomString(TokenSecretLen)
	return prefix + id + "." + secret, id, hashSecret(secret)
}

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// ParseToken splits "<prefix><id>.<secret>" and checks its shape: an id of
// 8 and a secret of at least 32 characters of [a-z0-9].
func ParseToken(prefix, token string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(token, prefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, ".")
	if !found || len(id) != TokenIDLen || len(secret) < minSecretLen || len(secret) > 128 {
		return "", "", false
	}
	if !isAlnum(id) || !isAlnum(secret) {
		return "", "", false
	}
	return id, secret, true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// secretMatches compares a presented secret with a stored hash in
// constant time.
func secretMatches(secret string, stored []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(secret), stored) == 1
}

// TokenID returns the id part of a token for logs, never the secret.
func TokenID(token string) string {
	for _, p := range []string{PrefixJoin, PrefixCredential, PrefixAPI} {
		if id, _, ok := ParseToken(p, token); ok {
			return p + id
		}
	}
	return "(malformed)"
}
