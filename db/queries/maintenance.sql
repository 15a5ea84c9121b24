-- name: MaintenanceInsert :one
INSERT INTO maintenance_windows (node_id, starts_at, ends_at, reason, created_by)
VALUES (@node_id, @starts_at, @ends_at, @reason, @created_by)
RETURNING *;

-- MaintenanceListByNode lists a node's windows that have not ended,
-- cancelled ones included when all is set, soonest first.
-- name: MaintenanceListByNode :many
SELECT * FROM maintenance_windows
WHERE node_id = @node_id AND (@include_all::boolean OR (cancelled_at IS NULL AND ends_at > now()))
ORDER BY starts_at, id LIMIT 200;

-- name: MaintenanceListCurrent :many
SELECT w.*, n.name AS node_name FROM maintenance_windows w JOIN nodes n ON n.id = w.node_id
WHERE w.cancelled_at IS NULL AND w.ends_at > now()
ORDER BY w.starts_at, w.id LIMIT 1000;

-- name: MaintenanceGetForUpdate :one
SELECT w.*, n.name AS node_name FROM maintenance_windows w JOIN nodes n ON n.id = w.node_id
WHERE w.id = @id FOR UPDATE OF w;

-- name: MaintenanceCancel :one
UPDATE maintenance_windows SET cancelled_at = now(), cancelled_by = @cancelled_by
WHERE id = @id AND cancelled_at IS NULL RETURNING *;

-- MaintenanceLiveForNodes returns the windows not cancelled and not ended
-- of the given nodes, to work out each node's maintenance in force.
-- name: MaintenanceLiveForNodes :many
SELECT node_id, starts_at, ends_at, reason FROM maintenance_windows
WHERE cancelled_at IS NULL AND ends_at > now() AND (@all_nodes::boolean OR node_id = ANY(@node_ids::bigint[]))
ORDER BY node_id, starts_at;

-- MaintenanceNodesMirrored returns the maintenance mirrored in the given
-- node rows, and with all_nodes in every node row in maintenance. A sync
-- of some nodes must not see the others: it has not read their windows.
-- name: MaintenanceNodesMirrored :many
SELECT id, maintenance_until, maintenance_reason FROM nodes
WHERE (@all_nodes::boolean AND maintenance_until > now()) OR id = ANY(@node_ids::bigint[])
ORDER BY id;

-- MaintenanceNodesLock locks node rows in id order, so that the windows
-- read after it include every window added under those locks.
-- name: MaintenanceNodesLock :exec
SELECT id FROM nodes WHERE id = ANY(@ids::bigint[]) ORDER BY id FOR UPDATE;

-- NodeMaintenanceMirror writes the maintenance in force into the node
-- rows (locked in id order, like every statement that locks several
-- nodes).
-- name: NodeMaintenanceMirror :exec
WITH locked AS (
    SELECT id FROM nodes WHERE id = ANY(@ids::bigint[]) ORDER BY id FOR UPDATE
)
UPDATE nodes n SET maintenance_until = m.until, maintenance_reason = m.reason
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@untils::timestamptz[]) AS until,
             unnest(@reasons::text[]) AS reason) m
WHERE n.id = m.id AND n.id IN (SELECT id FROM locked);
