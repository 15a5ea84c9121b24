-- name: UserCount :one
SELECT count(*) FROM users;

-- name: UserInsert :one
INSERT INTO users (email, password_hash, role) VALUES (@email, @password_hash, @role)
RETURNING *;

-- name: UserGetByEmail :one
SELECT * FROM users WHERE lower(email) = lower(@email);

-- name: UserGet :one
SELECT * FROM users WHERE id = @id;

-- name: UserList :many
SELECT * FROM users ORDER BY email;

-- name: UserSetRole :one
UPDATE users SET role = @role, updated_at = now() WHERE id = @id RETURNING *;

-- name: UserSetDisabled :one
UPDATE users SET disabled_at = CASE WHEN @disabled::boolean THEN now() ELSE NULL END, updated_at = now()
WHERE id = @id RETURNING *;

-- UserCountActiveOwners counts the active owners and locks their rows
-- until the transaction ends, so two transactions that each demote or
-- disable one of two owners cannot both see two.
-- name: UserCountActiveOwners :one
SELECT count(*) FROM (SELECT id FROM users WHERE role = 'owner' AND disabled_at IS NULL FOR UPDATE) owners;

-- UserTableLock serialises first-run setups, so only one creates the
-- first owner.
-- name: UserTableLock :exec
LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE;

-- name: UserSetPassword :exec
UPDATE users SET password_hash = @password_hash, updated_at = now() WHERE id = @id;
