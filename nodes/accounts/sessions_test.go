package accounts_test

import (
	"errors"
	"testing"

	"github.com/callplane/callplane/nodes/accounts"
)

// sessionRow selects a session by its token, as the table stores it.
const sessionRow = "id_hash = sha256(convert_to($1, 'UTF8'))"

// Every sign-in starts a new session; only a hash of its token is stored;
// a session lives until logout, and ending one leaves the others.
func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t)
	one := e.mustLogin(ownerEmail, password, "10.0.0.1")
	two := e.mustLogin(ownerEmail, password, "10.0.0.2")
	if one == two {
		t.Fatal("two sign-ins share a session token")
	}
	u, err := e.s.Session(e.ctx, one)
	if err != nil || u != e.owner {
		t.Fatalf("session: %+v %v, want %+v", u, err, e.owner)
	}
	for _, bad := range []string{"", one + "x", two[:len(two)-1]} {
		if _, err := e.s.Session(e.ctx, bad); !errors.Is(err, accounts.ErrBadCredentials) {
			t.Errorf("session of a wrong token: %v", err)
		}
	}
	if n := e.count("SELECT count(*) FROM sessions WHERE "+sessionRow, one); n != 1 {
		t.Fatal("the session is not stored by the hash of its token")
	}
	if n := e.count("SELECT count(*) FROM sessions WHERE position(convert_to($1, 'UTF8') IN id_hash) > 0", one); n != 0 {
		t.Fatal("the session token is stored in clear")
	}

	list, err := e.s.Sessions(e.ctx, e.owner, one)
	if err != nil || len(list) != 2 {
		t.Fatalf("sessions: %+v %v", list, err)
	}
	for _, s := range list {
		if s.Current != (s.SourceAddr == "10.0.0.1") || s.UserAgent != "test browser" {
			t.Errorf("session listed as %+v", s)
		}
	}

	if err := e.s.Logout(e.ctx, one, e.owner, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Session(e.ctx, one); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Fatalf("session after logout: %v", err)
	}
	if _, err := e.s.Session(e.ctx, two); err != nil {
		t.Fatalf("the other session ended with the logout: %v", err)
	}
	if e.audits("logout", "ok") != 1 || e.audits("login", "ok") != 2 {
		t.Error("sign-in and logout not audited")
	}
	e.noSecrets(one, two, password)
}

// A session ends at its absolute expiry and after the idle timeout, on
// its next use or at the next prune, whichever comes first.
func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	e := setup(t)
	expired := e.mustLogin(ownerEmail, password, "10.0.0.1")
	idle := e.mustLogin(ownerEmail, password, "10.0.0.2")
	live := e.mustLogin(ownerEmail, password, "10.0.0.3")
	pruned := e.mustLogin(ownerEmail, password, "10.0.0.4")
	e.exec("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE "+sessionRow, expired)
	e.exec("UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) - interval '1 minute' WHERE "+sessionRow,
		idle, e.s.IdleTimeout.Seconds())
	e.exec("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE "+sessionRow, pruned)

	for name, token := range map[string]string{"expired": expired, "idle": idle} {
		if _, err := e.s.Session(e.ctx, token); !errors.Is(err, accounts.ErrBadCredentials) {
			t.Errorf("%s session: %v", name, err)
		}
		if n := e.count("SELECT count(*) FROM sessions WHERE "+sessionRow, token); n != 0 {
			t.Errorf("%s session still stored", name)
		}
	}
	if _, err := e.s.Session(e.ctx, live); err != nil {
		t.Fatalf("live session: %v", err)
	}
	e.s.Prune(e.ctx)
	if n := e.count("SELECT count(*) FROM sessions"); n != 1 {
		t.Errorf("%d sessions after prune, want the live one", n)
	}
}

// Disabling an account ends its sessions at once and refuses its sign-in;
// enabling it lets it sign in again.
func TestDisablingEndsSessions(t *testing.T) {
	t.Parallel()
	e := setup(t)
	admin := e.addUser("admin@example.com", accounts.RoleAdmin)
	tokens := []string{e.mustLogin(admin.Email, password, "10.0.0.1"), e.mustLogin(admin.Email, password, "10.0.0.2")}
	if err := e.s.SetDisabled(e.ctx, e.owner, "127.0.0.1", admin.ID, true); err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if _, err := e.s.Session(e.ctx, tok); !errors.Is(err, accounts.ErrBadCredentials) {
			t.Errorf("session of a disabled account: %v", err)
		}
	}
	if _, err := e.login(admin.Email, password, "10.0.0.1"); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Errorf("sign-in of a disabled account: %v", err)
	}
	if n := e.count("SELECT count(*) FROM audit_log WHERE action = 'user.disable' AND result = 'ok' AND target = $1 AND detail = '2 sessions ended'", admin.Email); n != 1 {
		t.Error("disabling not audited with the sessions it ended")
	}
	if err := e.s.SetDisabled(e.ctx, e.owner, "127.0.0.1", admin.ID, false); err != nil {
		t.Fatal(err)
	}
	e.mustLogin(admin.Email, password, "10.0.0.1")
	if e.audits("user.enable", "ok") != 1 {
		t.Error("enabling not audited")
	}
}
