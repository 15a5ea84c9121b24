package nodes

import "testing"

// BenchmarkTokenCheck is the CPU part of every agent and admin API
// request's credential check: parse the bearer token and compare the
// secret's hash in constant time (the row lookup is in
// BenchmarkPlacement/AuthNode).
func BenchmarkTokenCheck(b *testing.B) {
	token, _, hash := newSecretToken(PrefixCredential)
	b.ReportAllocs()
	for b.Loop() {
		_, secret, ok := ParseToken(PrefixCredential, token)
		if !ok || !secretMatches(secret, hash) {
			b.Fatal("token refused")
		}
	}
}
