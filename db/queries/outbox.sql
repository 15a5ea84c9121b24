-- Queries of the alert mailer (nodes/outbox) and the settings page's view
-- of the outbox.

-- AlertDueAge is how old, in seconds, the oldest due pending alert is
-- (-1 when none is due), so the mailer can wait for a burst to gather.
-- name: AlertDueAge :one
SELECT coalesce(extract(epoch FROM now() - min(created_at)), -1)::float8 AS age_seconds
FROM alerts WHERE state = 'pending' AND next_attempt_at <= now();

-- name: AlertListFailed :many
SELECT * FROM alerts WHERE state = 'failed' ORDER BY id DESC LIMIT @lim;

-- name: AlertListPendingWithError :many
SELECT * FROM alerts WHERE state = 'pending' AND last_error <> '' ORDER BY id DESC LIMIT @lim;
