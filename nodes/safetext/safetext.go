// Package safetext holds the one rule for text that comes from outside
// (forms, JSON, query strings, agent reports): valid UTF-8, no control
// characters, a length counted in runes. Check refuses bad text at the
// edge with a message naming what is wrong; Sanitize repairs text that
// must be kept rather than refused (an agent's version string), cutting
// only on rune boundaries so Postgres never sees a broken UTF-8 sequence.
package safetext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Check reports what is wrong with v as a text value of at most maxRunes
// runes, or "" when it is fine. Multi-line values may hold tab, newline
// and carriage return; no value may hold any other control character
// (C0, DEL, C1), a NUL included, or bytes that are not UTF-8.
func Check(v string, maxRunes int, multiline bool) string {
	if !utf8.ValidString(v) {
		return "is not valid UTF-8 text"
	}
	n := 0
	for _, r := range v {
		n++
		if bad(r, multiline) {
			if multiline {
				return "must not contain control characters"
			}
			return "must be one line without control characters"
		}
	}
	if maxRunes > 0 && n > maxRunes {
		return fmt.Sprintf("must be at most %d characters", maxRunes)
	}
	return ""
}

func bad(r rune, multiline bool) bool {
	if multiline && (r == '\t' || r == '\n' || r == '\r') {
		return false
	}
	return unicode.IsControl(r)
}

// Sanitize makes s safe to store as one line of at most maxBytes bytes:
// invalid UTF-8 becomes U+FFFD, control characters (NUL included) are
// dropped, and the result is cut on a rune boundary.
func Sanitize(s string, maxBytes int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.IsControl(r) {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > maxBytes {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Truncate cuts s to at most maxBytes bytes without splitting a UTF-8
// sequence.
func Truncate(s string, maxBytes int) string {
	if len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
