package accounts_test

import (
	"errors"
	"testing"

	"github.com/callplane/callplane/nodes/accounts"
)

const newPassword = "a brand new passphrase"

// Changing the password needs the current one and a new one the policy
// accepts; each refusal and the change are audited; the change ends
// every other session of the user and no one else's.
func TestChangePassword(t *testing.T) {
	t.Parallel()
	e := setup(t)
	here := e.mustLogin(ownerEmail, password, "10.0.0.1")
	there := e.mustLogin(ownerEmail, password, "10.0.0.2")
	admin := e.addUser("admin@example.com", accounts.RoleAdmin)
	theirs := e.mustLogin(admin.Email, password, "10.0.0.3")

	change := func(current, next, confirm string) (int64, error) {
		return e.s.ChangePassword(e.ctx, e.owner, "10.0.0.1", here, current, next, confirm)
	}
	refusals := []struct {
		name, current, next, confirm, field string
	}{
		{"no current password", "", newPassword, newPassword, "current"},
		{"wrong current password", "not my password at all", newPassword, newPassword, "current"},
		{"too short", password, "short", "short", "password"},
		{"too long", password, string(make([]byte, 257)), string(make([]byte, 257)), "password"},
		{"unchanged", password, password, password, "password"},
		{"confirmation differs", password, newPassword, newPassword + "!", "confirm"},
	}
	for _, c := range refusals {
		if _, err := change(c.current, c.next, c.confirm); err == nil {
			t.Fatalf("%s: accepted", c.name)
		} else {
			wantField(t, err, c.field, c.name)
		}
	}
	if n := e.audits("user.password", "error"); n != len(refusals) {
		t.Errorf("%d refused changes audited, want %d", n, len(refusals))
	}
	if _, err := e.s.Session(e.ctx, there); err != nil {
		t.Fatalf("a refused change ended a session: %v", err)
	}
	e.mustLogin(ownerEmail, password, "10.0.0.1") // still the old password

	ended, err := change(password, newPassword, newPassword)
	if err != nil {
		t.Fatal(err)
	}
	// The two other sessions of the owner: there, and the check above.
	if ended != 2 {
		t.Errorf("%d other sessions ended, want 2", ended)
	}
	if _, err := e.s.Session(e.ctx, here); err != nil {
		t.Errorf("the session that changed the password ended: %v", err)
	}
	if _, err := e.s.Session(e.ctx, there); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Errorf("another session lives on after the change: %v", err)
	}
	if _, err := e.s.Session(e.ctx, theirs); err != nil {
		t.Errorf("another user's session ended: %v", err)
	}
	if _, err := e.login(ownerEmail, password, "10.0.0.1"); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Errorf("old password after the change: %v", err)
	}
	e.mustLogin(ownerEmail, newPassword, "10.0.0.1")
	if n := e.count("SELECT count(*) FROM audit_log WHERE action = 'user.password' AND result = 'ok' AND actor = $1 AND detail = 'password changed; 2 other sessions ended'", ownerEmail); n != 1 {
		t.Error("the change is not audited")
	}
	e.noSecrets(password, newPassword, "not my password at all", here, there)
}

// A left-open session cannot be used to guess the password: wrong current
// passwords share the sign-in slowdown of the account and address.
func TestChangePasswordGuessesAreThrottled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	here := e.mustLogin(ownerEmail, password, "10.0.0.1")
	for range accounts.FreePerPair {
		_, err := e.s.ChangePassword(e.ctx, e.owner, "10.0.0.1", here, "a wrong guess here", newPassword, newPassword)
		wantField(t, err, "current", "wrong guess")
	}
	_, err := e.s.ChangePassword(e.ctx, e.owner, "10.0.0.1", here, password, newPassword, newPassword)
	wantThrottled(t, err, "the right password after the guesses")
	if e.audits("user.password", "throttled") != 1 {
		t.Error("the throttled change is not audited")
	}
	if e.audits("user.password", "ok") != 0 {
		t.Error("the password changed")
	}
}
