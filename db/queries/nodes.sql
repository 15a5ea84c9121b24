-- name: NodeInsert :one
INSERT INTO nodes (name, kind, address, capacity, weight, region, description, admin_state, updated_by)
VALUES (@name, @kind, @address, @capacity, @weight, @region, @description, 'enabled', @updated_by)
RETURNING *;

-- name: NodeGet :one
SELECT * FROM nodes WHERE id = @id;

-- name: NodeGetByName :one
SELECT * FROM nodes WHERE name = @name;

-- name: NodeGetByNameForUpdate :one
SELECT * FROM nodes WHERE name = @name FOR UPDATE;

-- name: NodeList :many
SELECT * FROM nodes ORDER BY kind, name;

-- name: NodeListFiltered :many
SELECT * FROM nodes
WHERE (@kind::text = '' OR kind = @kind)
  AND (@admin_state::text = '' OR admin_state = @admin_state)
  AND (@health::text = '' OR health = @health)
  AND (@q::text = '' OR name ILIKE '%' || @q || '%' OR address ILIKE '%' || @q || '%' OR region ILIKE '%' || @q || '%')
ORDER BY kind, name;

-- name: NodeUpdate :one
UPDATE nodes SET address = @address, capacity = @capacity, weight = @weight,
    region = @region, description = @description, updated_at = now(), updated_by = @updated_by
WHERE id = @id RETURNING *;

-- name: NodeSetAdminState :one
UPDATE nodes SET admin_state = @admin_state, updated_at = now(), updated_by = @updated_by,
    assign_version = nextval('assign_version_seq')
WHERE id = @id RETURNING *;

-- name: NodeDelete :exec
DELETE FROM nodes WHERE id = @id;

-- name: NodeSetMaintenance :one
UPDATE nodes SET maintenance_until = @maintenance_until, maintenance_reason = @maintenance_reason,
    updated_at = now(), updated_by = @updated_by
WHERE id = @id RETURNING *;

-- name: NodeEnroll :one
UPDATE nodes SET enrolled_at = now(), agent_version = @agent_version,
    address = CASE WHEN @address::text = '' THEN address ELSE @address END,
    updated_at = now()
WHERE id = @id RETURNING *;

-- NodeHeartbeatBatch writes many heartbeats in one statement. A heartbeat
-- never changes health: a node is up only when the checker's probe agrees.
-- It locks the rows in id order, like every statement that locks several
-- nodes, so it cannot deadlock with a move or a batch placement.
-- name: NodeHeartbeatBatch :exec
WITH locked AS (
    SELECT id FROM nodes WHERE id = ANY(@ids::bigint[]) ORDER BY id FOR UPDATE
)
UPDATE nodes n SET last_heartbeat_at = b.at, reported_load = b.load, agent_version = b.version
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@ats::timestamptz[]) AS at,
             unnest(@loads::int[]) AS load, unnest(@versions::text[]) AS version) b
WHERE n.id = b.id AND n.id IN (SELECT id FROM locked);

-- name: NodeKindSummary :many
SELECT kind,
    count(*) FILTER (WHERE health = 'up' AND admin_state <> 'disabled')::int AS up,
    count(*) FILTER (WHERE health = 'suspect' AND admin_state <> 'disabled')::int AS suspect,
    count(*) FILTER (WHERE health = 'down' AND admin_state <> 'disabled')::int AS down,
    count(*) FILTER (WHERE health = 'pending' AND admin_state <> 'disabled')::int AS pending,
    count(*) FILTER (WHERE admin_state = 'disabled')::int AS disabled,
    count(*) FILTER (WHERE admin_state = 'draining')::int AS draining,
    coalesce(sum(capacity) FILTER (WHERE admin_state = 'enabled'), 0)::bigint AS capacity,
    coalesce(sum(used), 0)::bigint AS used
FROM nodes GROUP BY kind;

-- name: NodeVersion :one
SELECT assign_version, admin_state FROM nodes WHERE id = @id;

-- name: NodeRecountUsed :exec
UPDATE nodes n SET used = coalesce((SELECT sum(w.cost) FROM work w
    WHERE w.node_id = n.id AND w.state IN ('assigned', 'active')), 0),
    assign_version = nextval('assign_version_seq')
WHERE n.id = ANY(@ids::bigint[]);

-- name: NodeBumpVersion :exec
UPDATE nodes SET assign_version = nextval('assign_version_seq') WHERE id = ANY(@ids::bigint[]);

-- name: NodeSetHealth :one
UPDATE nodes SET health = @health, health_changed_at = CASE WHEN health <> @health THEN now() ELSE health_changed_at END,
    consecutive_fail = @consecutive_fail, consecutive_ok = @consecutive_ok,
    last_probe_at = now(), last_probe_detail = @last_probe_detail, flapping = @flapping,
    hold_until = @hold_until
WHERE id = @id RETURNING *;

-- name: ProbeResultInsertBatch :exec
INSERT INTO probe_results (node_id, ok, latency_us, detail)
SELECT unnest(@node_ids::bigint[]), unnest(@oks::boolean[]), unnest(@latencies::bigint[]), unnest(@details::text[]);

-- name: ProbeResultList :many
SELECT * FROM probe_results WHERE node_id = @node_id ORDER BY at DESC LIMIT @lim;

-- ProbeResultPrune deletes probe results older than the retention
-- setting retention_probes (a duration, default 1 hour), so the checker's
-- own pruning and the leader's retention pass agree.
-- name: ProbeResultPrune :execrows
DELETE FROM probe_results WHERE at < now() - coalesce(
    (SELECT value::interval FROM settings WHERE key = 'retention_probes'), interval '1 hour');

-- name: NodeAddresses :many
SELECT id, name, kind, address FROM nodes ORDER BY id;

-- name: NodeRegistryLock :exec
SELECT pg_advisory_xact_lock(4711001);

-- name: NodeSetHookError :exec
UPDATE nodes SET last_hook_error = @last_hook_error, last_hook_error_at = now() WHERE id = @id;

-- NodeCandidates reads, without locking, the nodes that may take new work
-- of the given kinds (node_eligibility, migration 00004): what a
-- placement of new work plans on.
-- name: NodeCandidates :many
SELECT id, name, kind, capacity, used, weight FROM node_eligibility
WHERE eligible AND kind = ANY(@kinds::text[])
ORDER BY id;

-- NodeCandidatesForUpdate locks, in id order, the nodes of a kind that may
-- take work, but one: what a move or the placing of waiting work plans on.
-- name: NodeCandidatesForUpdate :many
SELECT id, name, kind, capacity, used, weight FROM node_eligibility
WHERE eligible AND kind = @kind::text AND id <> @exclude_id::bigint
ORDER BY id FOR UPDATE;

-- NodeLockForPlacement locks the nodes a placement plan chose, in id
-- order (the order every statement that locks several nodes takes), and
-- returns their latest state so the plan is checked under the locks.
-- name: NodeLockForPlacement :many
SELECT id, capacity, used, eligible FROM node_eligibility
WHERE id = ANY(@ids::bigint[])
ORDER BY id FOR UPDATE;

-- NodeAddUsed adds each node's share of a placement to its used counter
-- and bumps its assignment version, in one statement. The nodes are
-- locked by NodeLockForPlacement in the same transaction, so the counter
-- stays equal to the sum of its live work.
-- name: NodeAddUsed :exec
UPDATE nodes n SET used = n.used + d.delta, assign_version = nextval('assign_version_seq')
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@deltas::int[]) AS delta) d
WHERE n.id = d.id;

-- NodePlacementTurn makes placements of new work of the same node kinds
-- take turns across instances (a transaction-level advisory lock per
-- node kind, in name order), then bounds how long the rest of the
-- transaction waits for a row lock, in one round trip. Placements would
-- otherwise plan on the same nodes and queue on the same rows; waiting for
-- the turn happens before any node is locked, so it cannot close a cycle.
-- A placement may then wait for one node while holding others; when that
-- closes a cycle with a writer that locks out of id order (SetAdminState
-- locks its node first), it gives up after 200 ms, well before Postgres's
-- deadlock detector (1 s by default) would pick a victim, and the retry
-- policy runs it again.
-- name: NodePlacementTurn :exec
WITH turn AS (
    SELECT count(*) AS n FROM (
        SELECT pg_advisory_xact_lock(1885433171, hashtext(k))
        FROM (SELECT DISTINCT unnest(@kinds::text[]) AS k ORDER BY 1) ks) l
)
SELECT set_config('lock_timeout', '200ms', true) FROM turn;

-- name: NodeNamesByID :many
SELECT id, name FROM nodes WHERE id = ANY(@ids::bigint[]);

-- name: NodeSetRotateRequested :execrows
UPDATE nodes SET rotate_requested = @rotate_requested WHERE id = @id;

-- NotifyAsync sends one notification in a transaction of its own whose
-- commit does not wait for the WAL flush. Postgres serializes every
-- notifying transaction's commit on one database-wide lock, held across
-- that commit's WAL flush; a change committed first (durably) and then
-- announced here keeps the lock for microseconds instead. A notification
-- carries no data to keep: after a crash it is lost either way, and an
-- agent's long-poll then answers at its wait.
-- name: NotifyAsync :exec
SELECT set_config('synchronous_commit', 'off', true), pg_notify(@channel::text, @payload::text);
