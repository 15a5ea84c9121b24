-- name: AlertInsert :exec
INSERT INTO alerts (type, node_name, payload) VALUES (@type, @node_name, @payload);

-- Alerts being sent (sending_since set) are not due: whoever marked them
-- records the outcome, or AlertResolveAbandoned does.
-- name: AlertClaimDue :many
SELECT * FROM alerts WHERE state = 'pending' AND next_attempt_at <= now() AND sending_since IS NULL
ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED;

-- AlertMarkSending is committed before the email goes to SMTP.
-- name: AlertMarkSending :exec
UPDATE alerts SET sending_since = now(), email_id = @email_id WHERE id = ANY(@ids::bigint[]);

-- AlertResolveAbandoned closes sends whose instance stopped before it
-- recorded the outcome: the email may have gone out, and sending it again
-- could deliver it twice, so it is recorded as sent, unconfirmed.
-- name: AlertResolveAbandoned :many
UPDATE alerts SET state = 'sent', sent_at = now(), sending_since = NULL,
    last_error = 'delivery unconfirmed: the sending instance stopped mid-send; not sent again'
WHERE state = 'pending' AND sending_since < now() - make_interval(secs => @after_seconds::float8)
RETURNING *;

-- name: AlertMarkSent :exec
UPDATE alerts SET state = 'sent', sent_at = now(), attempts = attempts + 1, email_id = @email_id, last_error = '',
    sending_since = NULL
WHERE id = ANY(@ids::bigint[]);

-- name: AlertMarkRetry :exec
UPDATE alerts SET attempts = attempts + 1, last_error = @last_error, sending_since = NULL,
    next_attempt_at = now() + make_interval(secs => @delay_seconds::float8)
WHERE id = ANY(@ids::bigint[]);

-- name: AlertMarkFailed :exec
UPDATE alerts SET state = 'failed', attempts = attempts + 1, last_error = @last_error, sending_since = NULL
WHERE id = ANY(@ids::bigint[]);

-- name: AlertList :many
SELECT * FROM alerts ORDER BY id DESC LIMIT @lim;

-- name: AlertCounts :many
SELECT state, count(*)::bigint AS n FROM alerts GROUP BY state;

-- AlertTally counts the outbox by type and state, with the send attempts
-- and acknowledgements, for /metrics: one scan, bounded cardinality.
-- name: AlertTally :many
SELECT type, state, count(*)::bigint AS n, coalesce(sum(attempts), 0)::bigint AS attempts,
    count(*) FILTER (WHERE acked_at IS NOT NULL)::bigint AS acked
FROM alerts GROUP BY type, state;

-- name: AlertRecentOfType :one
SELECT count(*) FROM alerts WHERE type = @type AND node_name = @node_name
  AND created_at > now() - make_interval(secs => @window_seconds::float8);

-- name: AlertPage :many
SELECT * FROM alerts
WHERE (@cursor::bigint = 0 OR id < @cursor)
  AND (@node_name::text = '' OR node_name = @node_name)
  AND (@state::text = '' OR state = @state)
  AND (@type::text = '' OR type = @type)
ORDER BY id DESC LIMIT @lim;

-- name: AlertGetForUpdate :one
SELECT * FROM alerts WHERE id = @id FOR UPDATE;

-- name: AlertAck :one
UPDATE alerts SET acked_at = now(), acked_by = @acked_by, ack_note = @ack_note
WHERE id = @id RETURNING *;

-- AlertLastDown returns the newest down alert (or reminder) of a node
-- queued since it went down, with its acknowledgement.
-- name: AlertLastDown :one
SELECT * FROM alerts
WHERE type = 'health' AND node_name = @node_name AND created_at >= @since
  AND payload->>'to' = 'down'
ORDER BY id DESC LIMIT 1;

-- AlertAckSince returns the acknowledgement of a node's down alerts
-- queued since it went down, if any was acknowledged.
-- name: AlertAckSince :one
SELECT acked_by, ack_note, acked_at FROM alerts
WHERE type = 'health' AND node_name = @node_name AND created_at >= @since
  AND payload->>'to' = 'down' AND acked_at IS NOT NULL
ORDER BY acked_at DESC LIMIT 1;

-- AlertReminderDue lists the nodes down (not disabled, not in
-- maintenance) whose down alert is not acknowledged and whose last alert
-- is older than the reminder interval.
-- name: AlertReminderDue :many
SELECT n.id, n.name, n.kind, n.address, n.health_changed_at, a.id AS alert_id, a.payload
FROM nodes n
JOIN LATERAL (
    SELECT id, payload, created_at, acked_at FROM alerts
    WHERE type = 'health' AND node_name = n.name AND created_at >= n.health_changed_at
      AND payload->>'to' = 'down'
    ORDER BY id DESC LIMIT 1
) a ON true
WHERE n.health = 'down' AND n.admin_state <> 'disabled'
  AND (n.maintenance_until IS NULL OR n.maintenance_until <= now())
  AND a.acked_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM alerts x WHERE x.type = 'health' AND x.node_name = n.name
                    AND x.payload->>'to' = 'down' AND x.created_at >= n.health_changed_at
                    AND x.acked_at IS NOT NULL)
  AND a.created_at < now() - make_interval(secs => @every_seconds::float8)
ORDER BY n.id;

-- AlertPrune deletes alerts that were sent or given up on longer ago than
-- the given age; pending alerts are never pruned.
-- name: AlertPrune :execrows
DELETE FROM alerts WHERE id IN (
    SELECT id FROM alerts WHERE state <> 'pending' AND created_at < now() - make_interval(secs => @older_than_seconds::float8) LIMIT @lim);
