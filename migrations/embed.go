// Package migrations holds the SQL schema of Callplane as goose migrations,
// embedded so that every binary can apply them ("callmanager migrate" and at
// "serve") and sqlc reads the same files as its schema.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
