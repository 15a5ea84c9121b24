// Package settings owns Callplane's settings model: the health checker's,
// alert mailer's and SIP front door's settings and the history retention
// periods (which nodes.Service.Prune takes as nodes.PruneAges), with
// their names as stored in the settings table and named in the portal's
// forms, their built-in defaults, the command line's overlay (Defaults),
// validation into problem.FieldErrors naming each field, and the Store
// that reads them (cached briefly, so every instance sees a save within
// seconds) and writes them with an audit row of what changed, in one
// transaction.
//
// The health checker (nodes/health), the mailer (nodes/outbox), the SIP
// front door, the portal and the API read settings here; none of them
// needs another's package for it.
package settings
