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

-- NodeListFiltered lists the nodes matching the filter, a page of them:
-- lim rows after off, each with the number of all that match (a page past
-- the last has no rows).
-- name: NodeListFiltered :many
SELECT sqlc.embed(nodes), count(*) OVER ()::int AS total FROM nodes
WHERE (@kind::text = '' OR kind = @kind)
  AND (@admin_state::text = '' OR admin_state = @admin_state)
  AND (@health::text = '' OR health = @health)
  AND (@q::text = '' OR name ILIKE '%' || @q || '%' OR address ILIKE '%' || @q || '%' OR region ILIKE '%' || @q || '%')
ORDER BY kind, name
LIMIT @lim OFFSET @off;

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
    SELECT id FROM nodes WHERE id = ANY(@ids::bigint[]) ORDER BY id FOR NO KEY UPDATE
)
UPDATE nodes n SET last_heartbeat_at = b.at, reported_load = b.load, agent_version = b.version
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@ats::timestamptz[]) AS at,
             unnest(@loads::int[]) AS load, unnest(@versions::text[]) AS version) b
WHERE n.id = b.id AND n.id IN (SELECT id FROM locked);

-- NodeHeartbeatBatchSkipLocked is NodeHeartbeatBatch for the nodes no other
-- transaction holds: a placement group holds its nodes to its commit, and
-- a batch of heartbeats waiting for them held the others it had locked,
-- which the next group then waited for. It returns the nodes it wrote;
-- the others' beats are written at the next flush, waiting then
-- (nodes.Heartbeats).
-- name: NodeHeartbeatBatchSkipLocked :many
WITH locked AS (
    SELECT id FROM nodes WHERE id = ANY(@ids::bigint[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE nodes n SET last_heartbeat_at = b.at, reported_load = b.load, agent_version = b.version
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@ats::timestamptz[]) AS at,
             unnest(@loads::int[]) AS load, unnest(@versions::text[]) AS version) b
WHERE n.id = b.id AND n.id IN (SELECT id FROM locked)
RETURNING n.id;

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
    WHERE w.node_id = n.id AND w.phase = 'live'), 0),
    assign_version = nextval('assign_version_seq')
WHERE n.id = ANY(@ids::bigint[]);

-- NodeRequestResync makes a node's agent take its whole desired set at its
-- next poll: it bumps the version (the UPDATE draws it once it holds the
-- row) and no delta is served below it (resync_version).
-- name: NodeRequestResync :exec
UPDATE nodes SET assign_version = nextval('assign_version_seq'), resync_version = currval('assign_version_seq')
WHERE id = @id;

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

-- NodePlacementCandidates takes the placement turn of the node kinds and
-- reads their eligible nodes (migrations/00009_placement_statements.sql):
-- what a placement of new work plans on.
-- name: NodePlacementCandidates :many
SELECT c.id::bigint AS id, c.name::text AS name, c.kind::text AS kind, c.capacity::int AS capacity,
    c.used::int AS used, c.weight::int AS weight
FROM node_placement_candidates(@kinds::text[]) c;

-- NodeCandidates reads, without locking, the nodes that may take new work
-- of the given kinds (node_eligibility, migration 00004).
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
