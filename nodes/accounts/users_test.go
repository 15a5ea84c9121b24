package accounts_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/callplane/callplane/nodes/accounts"
	"github.com/callplane/callplane/nodes/problem"
)

// First-run setup needs this instance's code, creates one owner, and
// closes once an account exists.
func TestSetup(t *testing.T) {
	t.Parallel()
	e := fresh(t)
	if need, err := e.s.NeedsSetup(e.ctx); err != nil || !need {
		t.Fatalf("needs setup on an empty database: %v %v", need, err)
	}
	if _, err := e.s.Setup(e.ctx, "NOT-THE-CODE", ownerEmail, password, "127.0.0.1"); !errors.Is(err, accounts.ErrBadCredentials) {
		t.Fatalf("wrong setup code: %v", err)
	}
	owner, err := e.s.Setup(e.ctx, strings.ToLower(e.s.SetupCode()), " Owner@Example.com ", password, "127.0.0.1")
	if err != nil || owner.Email != ownerEmail || owner.Role != accounts.RoleOwner {
		t.Fatalf("setup: %+v %v", owner, err)
	}
	if _, err := e.s.Setup(e.ctx, e.s.SetupCode(), "second@example.com", password, "127.0.0.1"); !errors.Is(err, accounts.ErrSetupDone) {
		t.Fatalf("second setup: %v", err)
	}
	if e.audits("setup", "error") != 1 || e.audits("setup", "ok") != 1 {
		t.Error("setup not audited")
	}
	if need, _ := e.s.NeedsSetup(e.ctx); need {
		t.Error("still needs setup")
	}
	e.noSecrets(e.s.SetupCode(), password)
}

// A new account needs a valid address, a password the policy accepts
// and a known role; an address in another case is the same account.
// Refusals are audited and write no account.
func TestAddUser(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, err := e.s.AddUser(e.ctx, ownerEmail, "127.0.0.1", "not an address", "short", "root")
	fe := wantField(t, err, "email", "bad input")
	if fe["password"] == "" || fe["role"] == "" {
		t.Errorf("bad input: %v", fe)
	}
	_, err = e.s.AddUser(e.ctx, ownerEmail, "127.0.0.1", "OWNER@example.com", password, accounts.RoleAdmin)
	wantField(t, err, "email", "the same address in another case")
	if n := e.count("SELECT count(*) FROM users"); n != 1 {
		t.Fatalf("%d accounts after refusals, want 1", n)
	}
	if n := e.audits("user.add", "error"); n != 2 {
		t.Errorf("%d refused additions audited, want 2", n)
	}
	e.addUser("viewer@example.com", accounts.RoleViewer)
	list, err := e.s.ListUsers(e.ctx)
	if err != nil || len(list) != 2 || list[1].Email != "viewer@example.com" || list[1].Role != accounts.RoleViewer || list[1].Disabled() || list[1].CreatedAt.IsZero() {
		t.Fatalf("list: %+v %v", list, err)
	}
	e.noSecrets(password)
}

// activeOwners counts the owners that may still sign in.
func (e *env) activeOwners() int {
	e.t.Helper()
	return e.count("SELECT count(*) FROM users WHERE role = 'owner' AND disabled_at IS NULL")
}

// The last active owner can be neither demoted nor disabled, and only an
// owner can make another owner; each refusal is audited and changes
// nothing. A disabled owner does not count as one.
func TestLastOwnerGuard(t *testing.T) {
	t.Parallel()
	e := setup(t)
	refusedRole, refusedDisable := 0, 0
	refuse := func(err error, what string, counter *int) {
		t.Helper()
		wantField(t, err, "role", what)
		*counter++
	}
	refuse(e.s.SetRole(e.ctx, e.owner, "127.0.0.1", e.owner.ID, accounts.RoleAdmin), "demoting the last owner", &refusedRole)
	refuse(e.s.SetDisabled(e.ctx, e.owner, "127.0.0.1", e.owner.ID, true), "disabling the last owner", &refusedDisable)
	if e.activeOwners() != 1 {
		t.Fatal("the last owner was changed")
	}
	if n := e.count("SELECT count(*) FROM audit_log WHERE action = 'user.role' AND result = 'error' AND target = $1 AND detail LIKE '%last active owner%'", ownerEmail); n != 1 {
		t.Errorf("refused demotion audited %d times, want once naming the rule", n)
	}

	admin := e.addUser("admin@example.com", accounts.RoleAdmin)
	refuse(e.s.SetRole(e.ctx, admin, "127.0.0.1", admin.ID, accounts.RoleOwner), "an admin making an owner", &refusedRole)
	if err := e.s.SetRole(e.ctx, e.owner, "127.0.0.1", admin.ID, accounts.RoleOwner); err != nil {
		t.Fatal(err)
	}
	// With the second owner disabled, the first is the last active one.
	if err := e.s.SetDisabled(e.ctx, e.owner, "127.0.0.1", admin.ID, true); err != nil {
		t.Fatalf("disabling one of two owners: %v", err)
	}
	refuse(e.s.SetRole(e.ctx, e.owner, "127.0.0.1", e.owner.ID, accounts.RoleViewer), "demoting the last active owner", &refusedRole)
	if err := e.s.SetDisabled(e.ctx, e.owner, "127.0.0.1", admin.ID, false); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetRole(e.ctx, e.owner, "127.0.0.1", e.owner.ID, accounts.RoleAdmin); err != nil {
		t.Fatalf("demoting one of two active owners: %v", err)
	}
	if e.activeOwners() != 1 {
		t.Fatal("no owner left")
	}
	if e.audits("user.role", "error") != refusedRole || e.audits("user.disable", "error") != refusedDisable {
		t.Errorf("refusals audited: role %d disable %d, want %d and %d",
			e.audits("user.role", "error"), e.audits("user.disable", "error"), refusedRole, refusedDisable)
	}
	if e.audits("user.role", "ok") != 2 || e.audits("user.disable", "ok") != 1 || e.audits("user.enable", "ok") != 1 {
		t.Error("role changes not audited")
	}
}

// Two owners demoting or disabling each other at the same moment: one
// wins, the other is refused, and one active owner remains. Without the
// row locks of the guard both could see two owners and both succeed, so
// the race is run many times.
func TestLastOwnerGuardUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := setup(t)
	second := e.addUser("second@example.com", accounts.RoleOwner)
	owners := []accounts.User{e.owner, second}
	for round := range 20 {
		start := make(chan struct{})
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, me := range owners {
			other := owners[1-i]
			wg.Go(func() {
				<-start
				if round%2 == 0 {
					errs[i] = e.s.SetRole(e.ctx, me, "127.0.0.1", other.ID, accounts.RoleAdmin)
				} else {
					errs[i] = e.s.SetDisabled(e.ctx, me, "127.0.0.1", other.ID, true)
				}
			})
		}
		close(start)
		wg.Wait()
		var fe problem.FieldErrors
		if (errs[0] == nil) == (errs[1] == nil) || !(errors.As(errs[0], &fe) || errors.As(errs[1], &fe)) {
			t.Fatalf("round %d: %v and %v, want exactly one refused by the guard", round, errs[0], errs[1])
		}
		if n := e.activeOwners(); n != 1 {
			t.Fatalf("round %d: %d active owners", round, n)
		}
		// Back to two active owners for the next round.
		e.exec("UPDATE users SET role = 'owner', disabled_at = NULL")
	}
}
