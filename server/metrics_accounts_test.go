package server_test

import (
	"testing"

	"github.com/callplane/callplane/server/servertest"
)

// The password-hashing pool shows in /metrics: its size, and the hashes
// an account and its sign-in ran, none left running or waiting.
func TestPasswordHashMetrics(t *testing.T) {
	t.Parallel()
	in := servertest.Start(t, servertest.Options{Settings: servertest.NoProbes})
	in.User(t, "owner@example.com", "owner") // one hash to create, one check to sign in
	body := metricsText(t, in, in.APIToken(t))
	if v := sample(body, "callplane_password_hash_workers", ""); v < 2 {
		t.Errorf("hash workers %v, want at least 2", v)
	}
	if v := sample(body, "callplane_password_hashes_total", ""); v < 2 {
		t.Errorf("hashes total %v, want at least 2", v)
	}
	for _, name := range []string{"callplane_password_hashes_running", "callplane_password_hashes_waiting"} {
		if v := sample(body, name, ""); v != 0 {
			t.Errorf("%s = %v, want 0 with no sign-in under way", name, v)
		}
	}
}
