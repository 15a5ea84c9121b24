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

-- LoginAttemptLock serialises sign-in attempts on the same keys (in key
-- order, so two attempts never wait on each other crosswise) until the
-- transaction ends: counting and recording an attempt is then one step.
-- name: LoginAttemptLock :exec
SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (SELECT unnest(@keys::text[]) AS k ORDER BY 1) ks;

-- LoginFailureStats measures since_last on the clock, not from now(): the
-- caller's transaction may have begun before it got the keys' lock, and
-- failures committed meanwhile would seem to lie in its future.
-- name: LoginFailureStats :many
SELECT key, count(*)::int AS failures, extract(epoch FROM clock_timestamp() - max(at))::float8 AS since_last FROM login_failures
WHERE key = ANY(@keys::text[]) AND at > now() - make_interval(secs => @window_seconds::float8)
GROUP BY key;

-- LoginAttemptInsert records an attempt as a failure before the password
-- is checked; a success deletes the rows again.
-- name: LoginAttemptInsert :many
INSERT INTO login_failures (key) SELECT unnest(@keys::text[]) RETURNING id;

-- name: LoginAttemptDelete :exec
DELETE FROM login_failures WHERE id = ANY(@ids::bigint[]);

-- name: LoginKnownUpsert :exec
INSERT INTO login_known (key) VALUES (@key) ON CONFLICT (key) DO UPDATE SET last_ok = now();

-- name: LoginKnownCheck :one
SELECT EXISTS (SELECT 1 FROM login_known WHERE key = @key AND last_ok > now() - interval '90 days');

-- name: LoginFailureClear :exec
DELETE FROM login_failures WHERE key = @key;

-- name: LoginFailurePrune :exec
DELETE FROM login_failures WHERE at < now() - interval '1 day';

-- name: LoginKnownPrune :exec
DELETE FROM login_known WHERE last_ok < now() - interval '90 days';

-- SessionDeleteOthers ends every session of a user but the one kept.
-- name: SessionDeleteOthers :execrows
DELETE FROM sessions WHERE user_id = @user_id AND id_hash <> @keep_hash;

-- name: SessionListByUser :many
SELECT id_hash, created_at, last_seen_at, source_addr, user_agent FROM sessions
WHERE user_id = @user_id ORDER BY last_seen_at DESC;
