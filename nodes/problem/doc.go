// Package problem holds the kinds of error Callplane's domain returns —
// invalid input (with FieldErrors), unauthorized, forbidden, not found,
// conflict, throttled, unavailable — and maps them to HTTP once, for the
// portal (web) and the JSON API (server) alike.
//
// A domain package makes an error of a kind with New (or returns
// FieldErrors, or a type whose Is reports its kind); callers test the kind
// with errors.Is, never the message. The database's two translated errors,
// db.ErrNotFound and db.ErrConflict (see db.Translate), are the NotFound and
// Conflict kinds themselves, so a missing row or a taken name arrives here
// already classified. HTTPStatus and Message are the one place a kind
// becomes a status and the text a person may see; a 5xx never shows its
// cause, which goes to the request log (RecordCause).
package problem
