// Package auth holds the portal's accounts: argon2id password hashing,
// users and roles, database-backed sessions, sign-in throttling and the
// one-time setup code that guards the first owner account.
package auth
