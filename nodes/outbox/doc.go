// Package outbox is the alert mailer: on the leader, it sends the alerts
// the health checker and the load balancer write to the alerts table (the
// outbox, written in the same transaction as the change they report).
// Due alerts are claimed with FOR UPDATE SKIP LOCKED, a burst is grouped
// into one email, and each alert is marked sent in the claiming
// transaction, so it is sent once even with several call managers.
// Temporary SMTP failures are retried with exponential backoff; permanent
// ones mark the alert failed, with a critical event the portal shows.
package outbox
