-- name: LeaderAcquire :one
UPDATE leader_lease SET holder = @holder, epoch = epoch + 1,
    expires_at = now() + make_interval(secs => @ttl_seconds::float8), acquired_at = now()
WHERE id = 1 AND (expires_at < now() OR holder = '')
RETURNING epoch;

-- name: LeaderRenew :one
UPDATE leader_lease SET expires_at = now() + make_interval(secs => @ttl_seconds::float8)
WHERE id = 1 AND holder = @holder AND epoch = @epoch AND expires_at > now()
RETURNING epoch;

-- name: LeaderRelease :exec
UPDATE leader_lease SET expires_at = '-infinity' WHERE id = 1 AND holder = @holder AND epoch = @epoch;

-- LeaderFence starts every leader write: it holds the lease row FOR SHARE
-- so the lease cannot change hands until the transaction ends, and returns
-- no row when this instance no longer leads with this epoch.
-- name: LeaderFence :one
SELECT epoch FROM leader_lease WHERE id = 1 AND holder = @holder AND epoch = @epoch AND expires_at > now() FOR SHARE;

-- LeaderHolder is the instance that holds an unexpired lease (no row: no
-- leader), judged by the database's clock like the lease itself.
-- name: LeaderHolder :one
SELECT holder FROM leader_lease WHERE id = 1 AND expires_at > now();

-- LeaderEpoch is the lease's epoch, whoever holds it and whether or not it
-- has expired (before the first leader, expires_at is -infinity, which
-- a time.Time cannot hold).
-- name: LeaderEpoch :one
SELECT epoch FROM leader_lease WHERE id = 1;
