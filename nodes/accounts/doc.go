// Package accounts is the administrators' side of the domain: who may
// use the portal and the admin API, and how they prove it. It knows
// nothing of HTTP; the portal (web) and the JSON API (server) set and read
// cookies, refuse cross-origin requests and map its errors to statuses.
//
//   - Administrators: accounts with a role (owner, admin, viewer), an
//     email address stored in lower case, and a disabled mark. The first
//     owner is created by first-run setup, guarded by a one-time code this
//     instance prints in its log.
//   - Passwords: argon2id (19 MiB, 2 passes, the OWASP minimum) with a
//     strength policy. Hashing runs on a bounded pool of workers, so a
//     flood of sign-ins cannot run more than HashWorkers hashes at once
//     (HashStats shows the pool); a request that finds no free worker in
//     time is refused with ErrBusy instead of queuing without bound.
//   - Sign-in throttling (throttle.go): a per-address budget of password
//     checks in memory, then failure counts in Postgres, shared by every
//     instance, per account and address, per address, and per account
//     from addresses it never signed in from. Past a free allowance each
//     further attempt must wait longer: a slowdown, never a lockout, so a
//     guesser elsewhere cannot shut the owner out of their usual address.
//   - Sessions: random tokens of which only a SHA-256 hash is stored, with
//     an idle and an absolute timeout; a new one at every sign-in, ended
//     at logout, when the account is disabled, and (all but the current
//     one) when the password changes.
//   - Last-owner guard: the last active owner can be neither demoted nor
//     disabled, and only an owner can make another owner. Accounts are
//     never deleted, only disabled, so there is no removal to guard.
//   - Audit: every change and every refusal (wrong password, throttled
//     attempt, rule or policy refused) writes an audit row naming the
//     actor, the target and the source address. Passwords, setup codes
//     and session tokens are never logged or audited.
//
// API tokens for scripts are not accounts: they belong to the cluster
// domain (package nodes), beside join tokens and node credentials.
//
// Database rows stay inside this package: callers see User, Account and
// Session, converted from rows in one place (rows.go).
package accounts
