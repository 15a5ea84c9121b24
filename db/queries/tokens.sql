-- name: JoinTokenInsert :exec
INSERT INTO join_tokens (id, node_id, secret_hash, created_by, expires_at)
VALUES (@id, @node_id, @secret_hash, @created_by, @expires_at);

-- name: JoinTokenGet :one
SELECT * FROM join_tokens WHERE id = @id;

-- JoinTokenConsume is the single statement that makes a token one-time:
-- of many concurrent enrolments with the same valid token exactly one
-- gets a row back.
-- name: JoinTokenConsume :one
UPDATE join_tokens SET used_at = now(), used_by_addr = @addr
WHERE id = @id AND secret_hash = @secret_hash
  AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
RETURNING node_id;

-- name: JoinTokenRevoke :execrows
UPDATE join_tokens SET revoked_at = now() WHERE id = @id AND used_at IS NULL AND revoked_at IS NULL;

-- name: JoinTokenList :many
SELECT t.*, n.name AS node_name FROM join_tokens t JOIN nodes n ON n.id = t.node_id
ORDER BY t.created_at DESC LIMIT 500;

-- name: JoinTokenPrune :execrows
DELETE FROM join_tokens WHERE expires_at < now() - interval '7 days';

-- name: CredentialInsert :exec
INSERT INTO node_credentials (id, node_id, secret_hash) VALUES (@id, @node_id, @secret_hash);

-- name: CredentialExpireOthers :exec
UPDATE node_credentials SET expires_at = now() + make_interval(secs => @overlap_seconds::float8)
WHERE node_id = @node_id AND id <> @keep_id AND revoked_at IS NULL AND expires_at IS NULL;

-- name: CredentialRevokeAll :exec
UPDATE node_credentials SET revoked_at = now() WHERE node_id = @node_id AND revoked_at IS NULL;

-- name: CredentialAuth :one
SELECT c.secret_hash, c.expires_at, n.id AS node_id, n.name, n.kind, n.admin_state, n.rotate_requested
FROM node_credentials c JOIN nodes n ON n.id = c.node_id
WHERE c.id = @id AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > now());

-- name: APITokenInsert :exec
INSERT INTO api_tokens (id, name, secret_hash, created_by) VALUES (@id, @name, @secret_hash, @created_by);

-- name: APITokenGet :one
SELECT * FROM api_tokens WHERE id = @id AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());

-- name: APITokenTouch :exec
UPDATE api_tokens SET last_used_at = now() WHERE id = @id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: APITokenList :many
SELECT * FROM api_tokens ORDER BY created_at DESC;

-- name: APITokenRevoke :execrows
UPDATE api_tokens SET revoked_at = now() WHERE id = @id AND revoked_at IS NULL;

-- JoinTokenEndForNode ends every other unused token of a node when one
-- enrols it: a join token admits one agent, and a token made before the
-- enrolment must not silently replace the running agent later.
-- name: JoinTokenEndForNode :execrows
UPDATE join_tokens SET revoked_at = now()
WHERE node_id = @node_id AND id <> @keep_id AND used_at IS NULL AND revoked_at IS NULL;

-- name: APITokenInsertScoped :exec
INSERT INTO api_tokens (id, name, secret_hash, created_by, scope, expires_at)
VALUES (@id, @name, @secret_hash, @created_by, @scope, @expires_at);
