-- name: AlertInsert :exec
INSERT INTO alerts (type, node_name, payload) VALUES (@type, @node_name, @payload);

-- name: AlertClaimDue :many
SELECT * FROM alerts WHERE state = 'pending' AND next_attempt_at <= now()
ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED;

-- name: AlertMarkSent :exec
UPDATE alerts SET state = 'sent', sent_at = now(), attempts = attempts + 1, email_id = @email_id, last_error = ''
WHERE id = ANY(@ids::bigint[]);

-- name: AlertMarkRetry :exec
UPDATE alerts SET attempts = attempts + 1, last_error = @last_error,
    next_attempt_at = now() + make_interval(secs => @delay_seconds::float8)
WHERE id = ANY(@ids::bigint[]);

-- name: AlertMarkFailed :exec
UPDATE alerts SET state = 'failed', attempts = attempts + 1, last_error = @last_error
WHERE id = ANY(@ids::bigint[]);

-- name: AlertList :many
SELECT * FROM alerts ORDER BY id DESC LIMIT @lim;

-- name: AlertCounts :many
SELECT state, count(*)::bigint AS n FROM alerts GROUP BY state;

-- name: AlertRecentOfType :one
SELECT count(*) FROM alerts WHERE type = @type AND node_name = @node_name
  AND created_at > now() - make_interval(secs => @window_seconds::float8);

-- AlertPrune deletes alerts that were sent or given up on longer ago than
-- the given age; pending alerts are never pruned.
-- name: AlertPrune :execrows
DELETE FROM alerts WHERE id IN (
    SELECT id FROM alerts WHERE state <> 'pending' AND created_at < now() - make_interval(secs => @older_than_seconds::float8) LIMIT @lim);
