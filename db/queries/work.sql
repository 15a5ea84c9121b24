-- WorkPlace places one new work item in one statement: it picks the
-- least-loaded eligible node (weighted load after adding the cost), bumps
-- its used counter and inserts the work on it, or inserts it unplaced
-- when no node has room.
-- name: WorkPlace :one
WITH unlocked AS (
    -- Concurrent placements would all pick the same least-loaded node and
    -- queue on its row lock, one commit (one WAL flush) after another. The
    -- least-loaded node no other placement holds right now is taken
    -- instead; SKIP LOCKED never waits, so it adds no lock-order risk.
    SELECT n.id FROM nodes n
    WHERE n.kind = @node_kind::text AND n.admin_state = 'enabled' AND n.health = 'up'
      AND n.used + @cost::int <= n.capacity
      AND (n.maintenance_until IS NULL OR n.maintenance_until < now())
    ORDER BY ((n.used + @cost::int)::float8 / n.capacity) / n.weight, n.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), target AS (
    -- When every node with room is held by another placement, wait for
    -- the least-loaded one as before rather than leave the work unplaced.
    SELECT id FROM unlocked
    UNION ALL
    (SELECT n.id FROM nodes n
    WHERE n.kind = @node_kind::text AND n.admin_state = 'enabled' AND n.health = 'up'
      AND n.used + @cost::int <= n.capacity
      AND (n.maintenance_until IS NULL OR n.maintenance_until < now())
    ORDER BY ((n.used + @cost::int)::float8 / n.capacity) / n.weight, n.id
    LIMIT 1)
    LIMIT 1
), bumped AS (
    -- The conditional UPDATE locks only the chosen row and re-checks the
    -- room after any concurrent update, so no two placements overfill a
    -- node and no two lock rows in opposite orders.
    UPDATE nodes SET used = nodes.used + @cost::int, assign_version = nextval('assign_version_seq')
    WHERE nodes.id = (SELECT id FROM target) AND nodes.used + @cost::int <= nodes.capacity
      AND nodes.admin_state = 'enabled' AND nodes.health = 'up'
    RETURNING nodes.id, nodes.name
)
INSERT INTO work (ref, kind, cost, state, node_id)
SELECT @ref::text, @kind::text, @cost::int,
       CASE WHEN (SELECT id FROM bumped) IS NULL THEN 'unplaced' ELSE 'assigned' END,
       (SELECT id FROM bumped)
RETURNING id, ref, kind, cost, state, node_id, epoch, created_at,
    coalesce((SELECT name FROM bumped), '')::text AS node_name;

-- name: WorkGetByRef :one
SELECT w.*, coalesce(n.name, '')::text AS node_name FROM work w LEFT JOIN nodes n ON n.id = w.node_id WHERE w.ref = @ref;

-- name: WorkGetForUpdate :one
SELECT * FROM work WHERE ref = @ref FOR UPDATE;

-- name: WorkEnd :one
UPDATE work SET state = 'ended', ended_at = now(), updated_at = now(), node_id = node_id
WHERE id = @id RETURNING *;

-- name: WorkList :many
SELECT w.*, coalesce(n.name, '')::text AS node_name FROM work w LEFT JOIN nodes n ON n.id = w.node_id
WHERE (@node_id::bigint = 0 OR w.node_id = @node_id)
  AND (@kind::text = '' OR w.kind = @kind)
  AND (@state::text = '' OR w.state = @state)
  AND (@q::text = '' OR w.ref ILIKE '%' || @q || '%')
ORDER BY w.id DESC LIMIT @lim;

-- name: WorkCounts :many
SELECT kind, state, count(*)::bigint AS n, coalesce(sum(cost), 0)::bigint AS cost
FROM work WHERE state <> 'ended' GROUP BY kind, state ORDER BY kind, state;

-- name: WorkCountsByNode :many
SELECT kind, count(*)::bigint AS n, coalesce(sum(cost), 0)::bigint AS cost
FROM work WHERE node_id = @node_id AND state IN ('assigned', 'active') GROUP BY kind ORDER BY kind;

-- name: WorkLiveOnNode :many
SELECT id, cost FROM work WHERE node_id = @node_id AND state IN ('assigned', 'active') ORDER BY id FOR UPDATE;

-- name: WorkDesiredForNode :many
SELECT id, ref, kind, cost, epoch, state FROM work
WHERE node_id = @node_id AND state IN ('assigned', 'active') ORDER BY id;

-- WorkDesiredSetForNode reads a node's assignment version and its live
-- work in one statement, so one snapshot covers both without an explicit
-- transaction: one round trip per long-poll answer instead of four. A
-- node without live work yields one row whose work columns are NULL; an
-- unknown node yields none.
-- name: WorkDesiredSetForNode :many
SELECT n.assign_version, w.id, w.ref, w.kind, w.cost, w.epoch, w.state
FROM nodes n
LEFT JOIN work w ON w.node_id = n.id AND w.state IN ('assigned', 'active')
WHERE n.id = @node_id
ORDER BY w.id;

-- WorkMove applies a computed placement to many work items in one
-- statement; node_id 0 means unplaced. The epoch grows on every move.
-- name: WorkMove :exec
UPDATE work w SET node_id = NULLIF(m.node_id, 0),
    state = CASE WHEN m.node_id = 0 THEN 'unplaced' ELSE 'assigned' END,
    epoch = w.epoch + 1, updated_at = now()
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@node_ids::bigint[]) AS node_id) m
WHERE w.id = m.id;

-- name: WorkUnplacedForKind :many
SELECT id, cost FROM work WHERE kind = @kind AND state = 'unplaced' ORDER BY id LIMIT @lim FOR UPDATE SKIP LOCKED;

-- name: WorkUnplacedKinds :many
SELECT DISTINCT kind FROM work WHERE state = 'unplaced';

-- name: WorkAck :one
UPDATE work SET state = CASE WHEN @state::text = 'failed' THEN 'unplaced' ELSE @state END,
    node_id = CASE WHEN @state::text IN ('failed') THEN NULL ELSE node_id END,
    ended_at = CASE WHEN @state::text = 'ended' THEN now() ELSE ended_at END,
    updated_at = now()
WHERE id = @id AND node_id = @node_id AND epoch = @epoch AND state IN ('assigned', 'active')
RETURNING *;

-- name: WorkGetByID :one
SELECT * FROM work WHERE id = @id;

-- name: WorkPruneEnded :execrows
DELETE FROM work WHERE state = 'ended' AND ended_at < now() - interval '1 day';

-- name: WorkNewestOnNode :many
SELECT id, cost FROM work WHERE node_id = @node_id AND state IN ('assigned', 'active') ORDER BY id DESC FOR UPDATE;

-- WorkBatchEligibleNodes reads, without locking, the nodes that may take
-- new work of the given node kinds: the plan of a batch placement.
-- name: WorkBatchEligibleNodes :many
SELECT id, name, kind, capacity, used FROM nodes
WHERE kind = ANY(@kinds::text[]) AND admin_state = 'enabled' AND health = 'up'
  AND (maintenance_until IS NULL OR maintenance_until < now())
ORDER BY id;

-- WorkBatchLockTargets locks the nodes a batch plan chose, in id order
-- (the order MoveAway, PlaceUnplaced and concurrent batches lock nodes
-- in), and returns their latest state so the plan can be checked under
-- the locks.
-- name: WorkBatchLockTargets :many
SELECT id, capacity, used,
    (admin_state = 'enabled' AND health = 'up' AND (maintenance_until IS NULL OR maintenance_until < now()))::boolean AS eligible
FROM nodes WHERE id = ANY(@ids::bigint[])
ORDER BY id FOR UPDATE;

-- WorkBatchSerialize makes batch placements of the same node kinds take
-- turns (a transaction-level advisory lock per node kind, in name order).
-- Batches would otherwise queue on the same node rows and give up at the
-- lock timeout below; waiting here happens before any node is locked, so
-- it cannot close a cycle.
-- name: WorkBatchSerialize :exec
SELECT pg_advisory_xact_lock(1885433171, hashtext(k)) FROM (SELECT DISTINCT unnest(@kinds::text[]) AS k ORDER BY 1) s;

-- WorkBatchLockTimeout bounds how long a batch placement waits for a node
-- lock in its transaction. A batch may wait for one node while holding
-- others; when that closes a cycle with a writer that locks out of id
-- order (SetAdminState locks its node first, heartbeat flushes lock in any
-- order), the batch gives up well before Postgres's deadlock detector
-- (1 s by default) would pick a victim, and is retried.
-- name: WorkBatchLockTimeout :exec
SELECT set_config('lock_timeout', '200ms', true);

-- WorkInsertBatch inserts many new work items in one statement; node_id 0
-- means unplaced. A ref that already exists is skipped (and absent from
-- the answer), so the caller can name the conflicts and roll back.
-- name: WorkInsertBatch :many
INSERT INTO work (ref, kind, cost, state, node_id)
SELECT t.ref, t.kind, t.cost, CASE WHEN t.node_id = 0 THEN 'unplaced' ELSE 'assigned' END, NULLIF(t.node_id, 0)
FROM (SELECT unnest(@refs::text[]) AS ref, unnest(@kinds::text[]) AS kind,
             unnest(@costs::int[]) AS cost, unnest(@node_ids::bigint[]) AS node_id) t
ON CONFLICT (ref) DO NOTHING
RETURNING id, ref, state, epoch;

-- WorkBatchAddUsed adds each node's share of a batch to its used counter
-- and bumps its assignment version, in one statement. The nodes are
-- locked by WorkBatchLockNodes in the same transaction, so the counter
-- stays equal to the sum of its live work, as with WorkPlace.
-- name: WorkBatchAddUsed :exec
UPDATE nodes n SET used = n.used + d.delta, assign_version = nextval('assign_version_seq')
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@deltas::int[]) AS delta) d
WHERE n.id = d.id;

-- WorkAckBatch applies many acks of one node in one statement, each fenced
-- like WorkAck by its epoch, the node and a live state. It returns the
-- acks that matched.
-- name: WorkAckBatch :many
UPDATE work w SET state = CASE WHEN a.state = 'failed' THEN 'unplaced' ELSE a.state END,
    node_id = CASE WHEN a.state = 'failed' THEN NULL ELSE w.node_id END,
    ended_at = CASE WHEN a.state = 'ended' THEN now() ELSE w.ended_at END,
    updated_at = now()
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@epochs::bigint[]) AS epoch, unnest(@states::text[]) AS state) a
WHERE w.id = a.id AND w.node_id = @node_id::bigint AND w.epoch = a.epoch AND w.state IN ('assigned', 'active')
RETURNING w.id, w.kind, a.state::text AS acked_state;

-- name: WorkGetByIDs :many
SELECT id, epoch, node_id, state FROM work WHERE id = ANY(@ids::bigint[]);

-- WorkUnackedNodes lists the nodes holding assignments not acknowledged
-- within the bound.
-- name: WorkUnackedNodes :many
SELECT DISTINCT node_id::bigint AS node_id FROM work
WHERE state = 'assigned' AND node_id IS NOT NULL
  AND updated_at < now() - make_interval(secs => @older_than_seconds::float8);

-- name: WorkUnackedOnNodeForUpdate :many
SELECT id, cost FROM work
WHERE state = 'assigned' AND node_id = @node_id
  AND updated_at < now() - make_interval(secs => @older_than_seconds::float8)
ORDER BY id FOR UPDATE;
