-- name: SessionInsert :exec
INSERT INTO sessions (id_hash, user_id, expires_at, source_addr, user_agent)
VALUES (@id_hash, @user_id, @expires_at, @source_addr, @user_agent);

-- name: SessionGet :one
SELECT s.id_hash, s.user_id, s.created_at, s.last_seen_at, s.expires_at,
       u.email, u.role, u.disabled_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.id_hash = @id_hash;

-- name: SessionTouch :exec
UPDATE sessions SET last_seen_at = now() WHERE id_hash = @id_hash;

-- name: SessionDelete :exec
DELETE FROM sessions WHERE id_hash = @id_hash;

-- name: SessionDeleteByUser :execrows
DELETE FROM sessions WHERE user_id = @user_id;

-- name: SessionDeleteExpired :execrows
DELETE FROM sessions WHERE expires_at < now() OR last_seen_at < now() - make_interval(secs => @idle_seconds::float8);

-- name: LoginFailureInsert :exec
INSERT INTO login_failures (key) SELECT unnest(@keys::text[]);

-- name: LoginFailureCount :one
SELECT count(*) FROM login_failures WHERE key = ANY(@keys::text[]) AND at > now() - make_interval(secs => @window_seconds::float8);

-- name: LoginFailureCountByKey :many
SELECT key, count(*) AS failures FROM login_failures
WHERE key = ANY(@keys::text[]) AND at > now() - make_interval(secs => @window_seconds::float8)
GROUP BY key;

-- name: LoginFailureClear :exec
DELETE FROM login_failures WHERE key = @key;

-- name: LoginFailurePrune :exec
DELETE FROM login_failures WHERE at < now() - interval '1 day';

-- SessionDeleteOthers ends every session of a user but the one kept.
-- name: SessionDeleteOthers :execrows
DELETE FROM sessions WHERE user_id = @user_id AND id_hash <> @keep_hash;

-- name: SessionListByUser :many
SELECT id_hash, created_at, last_seen_at, source_addr, user_agent FROM sessions
WHERE user_id = @user_id ORDER BY last_seen_at DESC;
