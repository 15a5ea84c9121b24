// Package agent is the logic of nodeagent, the process that runs beside each
// Callplane worker server (media, ivr, queue, meeting or im node).
//
// The agent has two jobs. Join enrols the node once: it presents a one-time
// join token to the call manager over HTTPS, checks the server's public key
// against the pin the administrator copied from the portal (so the token is
// never sent to anyone else), and stores the returned per-node credential in
// a state directory. Run then keeps the node connected: it heartbeats,
// long-polls the node's desired set of assignments, applies that set
// idempotently through an optional hook command, acks each assignment with
// its epoch, and optionally serves the node kind's probe endpoint.
//
// Tokens and credentials are secrets: this package never logs them; only the
// public id part of a join token ("cpj_xxxxxxxx") appears in logs.
package agent
