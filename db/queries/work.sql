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
FROM work WHERE node_id = @node_id AND phase = 'live' GROUP BY kind ORDER BY kind;

-- WorkLiveOnNode locks a node's live work, oldest first: what a move
-- off the node plans on.
-- name: WorkLiveOnNode :many
SELECT id, ref, kind, cost FROM work WHERE node_id = @node_id AND phase = 'live' ORDER BY id FOR UPDATE;

-- name: WorkDesiredForNode :many
SELECT id, ref, kind, cost, epoch, state FROM work
WHERE node_id = @node_id AND phase = 'live' ORDER BY id;

-- WorkDesiredSetForNode reads a node's assignment version and its live
-- work in one statement, so one snapshot covers both without an explicit
-- transaction: one round trip per long-poll answer instead of four. A
-- node without live work yields one row whose work columns are NULL; an
-- unknown node yields none.
-- A call placed by the SIP front door carries its Call-ID, From and To,
-- for the agent's hook.
-- name: WorkDesiredSetForNode :many
SELECT n.assign_version, w.id, w.ref, w.kind, w.cost, w.epoch, w.state,
    c.call_id, c.from_uri, c.to_uri
FROM nodes n
LEFT JOIN work w ON w.node_id = n.id AND w.phase = 'live'
LEFT JOIN sip_calls c ON c.ref = w.ref AND w.kind = 'call'
WHERE n.id = @node_id
ORDER BY w.id;

-- WorkDesiredDeltas returns what changed on several nodes, each since its
-- own version, with each node's version and resync floor: the current row
-- of every work item with a delivery to the node stamped after its since
-- (an item changed twice comes twice), at most @lim rows a node (more:
-- the caller sends the whole set). A row no longer live on the node is a
-- removal. A node without changes comes once, with id 0. The
-- lateral read in version order keeps every plan on the history's (node,
-- version) index whatever the table sizes; the arrays go through
-- sub-selects so that every call estimates them alike and Postgres keeps
-- one generic plan rather than planning each call (which cost more than
-- running it).
-- name: WorkDesiredDeltas :many
SELECT q.node_id::bigint AS for_node, n.assign_version, n.resync_version,
    coalesce(d.id, 0)::bigint AS id, d.node_id, coalesce(d.ref, '')::text AS ref, coalesce(d.kind, '')::text AS kind,
    coalesce(d.cost, 0)::int AS cost, coalesce(d.epoch, 0)::bigint AS epoch, coalesce(d.state, '')::text AS state,
    d.call_id, d.from_uri, d.to_uri
FROM (SELECT unnest((SELECT @node_ids::bigint[])) AS node_id, unnest((SELECT @sinces::bigint[])) AS since) q
JOIN nodes n ON n.id = q.node_id
LEFT JOIN LATERAL (
    SELECT w.id, w.node_id, w.ref, w.kind, w.cost, w.epoch, w.state, c.call_id, c.from_uri, c.to_uri
    FROM work_history h
    JOIN work w ON w.id = h.work_id
    LEFT JOIN sip_calls c ON c.ref = w.ref AND w.kind = 'call'
    WHERE h.node_id = q.node_id AND h.version > q.since
    ORDER BY h.version
    LIMIT @lim::int
) d ON true;

-- WorkMove applies a computed placement to many work items in one
-- statement; node_id 0 means unplaced. The epoch grows on every move.
-- name: WorkMove :exec
UPDATE work w SET node_id = NULLIF(m.node_id, 0),
    state = CASE WHEN m.node_id = 0 THEN 'unplaced' ELSE 'assigned' END,
    epoch = w.epoch + 1, updated_at = now()
FROM (SELECT unnest((SELECT @ids::bigint[])) AS id, unnest((SELECT @node_ids::bigint[])) AS node_id) m
WHERE w.id = m.id;

-- WorkUnplacedForKind returns waiting work with the nodes each item must
-- avoid: those whose start hook failed it within the last hour.
-- name: WorkUnplacedForKind :many
SELECT w.id, w.ref, w.kind, w.cost,
    coalesce((SELECT array_agg(f.node_id) FROM work_failures f
              WHERE f.work_id = w.id AND f.last_at > now() - interval '1 hour'), '{}')::bigint[] AS avoid
FROM work w WHERE w.kind = @kind AND w.phase = 'unplaced' ORDER BY w.id LIMIT @lim FOR UPDATE SKIP LOCKED;

-- name: WorkUnplacedKinds :many
SELECT DISTINCT kind FROM work WHERE phase = 'unplaced';

-- WorkAck is fenced like WorkAckActive (below), by key only.
-- name: WorkAck :one
UPDATE work SET state = CASE WHEN @state::text = 'failed' THEN 'unplaced' ELSE @state END,
    node_id = CASE WHEN @state::text IN ('failed') THEN NULL ELSE node_id END,
    ended_at = CASE WHEN @state::text = 'ended' THEN now() ELSE ended_at END,
    updated_at = now()
WHERE id = @id AND node_id IS NOT DISTINCT FROM @node_id AND epoch = @epoch AND state NOT IN ('ended', 'unplaced')
RETURNING *;

-- name: WorkGetByID :one
SELECT * FROM work WHERE id = @id;

-- WorkPruneEnded deletes up to lim work items that ended longer ago than
-- the given age, with their history (retention; the leader runs it in
-- batches). It counts the work items.
-- name: WorkPruneEnded :one
WITH gone AS (
    DELETE FROM work WHERE id IN (
        SELECT id FROM work WHERE phase = 'ended' AND ended_at < now() - make_interval(secs => @older_than_seconds::float8)
        LIMIT @lim)
    RETURNING id
), history AS (
    DELETE FROM work_history h USING gone WHERE h.work_id = gone.id
)
SELECT count(*) FROM gone;

-- WorkAckActive records active acks of many nodes in one statement, each
-- fenced like WorkAck by its node, its epoch and a live state. It returns
-- the acks that matched (an item acked twice in one statement matches once).
-- Each item is looked up by key whatever the plan Postgres would keep for
-- the work table as it was when the statement was prepared: see
-- work_ack_active (migration 00017).
-- name: WorkAckActive :many
SELECT a.id::bigint AS id, a.node_id::bigint AS node_id, a.epoch::bigint AS epoch
FROM work_ack_active(@ids::bigint[], @epochs::bigint[], @node_ids::bigint[]) a;

-- WorkAckBatch applies many acks of one node in one statement, each fenced
-- like WorkAck by its epoch, the node and a live state. It returns the
-- acks that matched, found by key like WorkAckActive's.
-- name: WorkAckBatch :many
UPDATE work w SET state = CASE WHEN a.state = 'failed' THEN 'unplaced' ELSE a.state END,
    node_id = CASE WHEN a.state = 'failed' THEN NULL ELSE w.node_id END,
    ended_at = CASE WHEN a.state = 'ended' THEN now() ELSE w.ended_at END,
    updated_at = now()
FROM (SELECT unnest((SELECT @ids::bigint[])) AS id, unnest((SELECT @epochs::bigint[])) AS epoch, unnest((SELECT @states::text[])) AS state) a
WHERE w.id = a.id AND w.node_id IS NOT DISTINCT FROM @node_id::bigint AND w.epoch = a.epoch AND w.state NOT IN ('ended', 'unplaced')
RETURNING w.id, w.kind, a.state::text AS acked_state;

-- name: WorkGetByIDs :many
SELECT id, epoch, node_id, state FROM work WHERE id = ANY(@ids::bigint[]);

-- name: WorkFailureRecord :one
INSERT INTO work_failures (work_id, node_id, failures, last_error, last_at)
VALUES (@work_id, @node_id, 1, @last_error, now())
ON CONFLICT (work_id, node_id) DO UPDATE SET failures = work_failures.failures + 1,
    last_error = excluded.last_error, last_at = now()
RETURNING failures;

-- name: WorkSetLastError :exec
UPDATE work SET last_error = @last_error WHERE id = @id;

-- name: WorkFailuresOnNode :many
SELECT f.failures, f.last_error, f.last_at, w.ref, w.kind, w.state
FROM work_failures f JOIN work w ON w.id = f.work_id
WHERE f.node_id = @node_id ORDER BY f.last_at DESC LIMIT @lim;

-- WorkPlace writes a placement plan in one statement: it locks and
-- checks the chosen nodes, inserts the work rows (skipping refs that
-- exist) and adds to the nodes' used counters
-- (migrations/00009_placement_statements.sql).
-- name: WorkPlace :many
SELECT p.id::bigint AS id, p.ref::text AS ref, p.state::text AS state, p.epoch::bigint AS epoch,
    coalesce(p.node, 0)::bigint AS node_id, coalesce(p.prev_version, 0)::bigint AS prev_version,
    coalesce(p.new_version, 0)::bigint AS new_version
FROM work_place(@refs::text[], @kinds::text[], @costs::int[], @node_ids::bigint[]) p;

-- WorkUnackedNodes lists the nodes holding assignments not acknowledged
-- within the bound.
-- name: WorkUnackedNodes :many
SELECT DISTINCT node_id::bigint AS node_id FROM work
WHERE phase = 'live' AND state = 'assigned' AND node_id IS NOT NULL
  AND updated_at < now() - make_interval(secs => @older_than_seconds::float8);

-- name: WorkUnackedOnNodeForUpdate :many
SELECT id, cost FROM work
WHERE phase = 'live' AND state = 'assigned' AND node_id = @node_id
  AND updated_at < now() - make_interval(secs => @older_than_seconds::float8)
ORDER BY id FOR UPDATE;
