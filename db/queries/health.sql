-- Queries of the health checker (nodes/health).

-- NodeProbeBatch records one probe round for the nodes whose health did not
-- change, in one statement. A node whose health changed under the checker
-- (a first heartbeat, say) is skipped: its row no longer matches health.
-- It locks the rows in id order, like every statement that locks several
-- nodes, so it cannot deadlock with the heartbeat flush or a move.
-- name: NodeProbeBatch :exec
WITH locked AS (
    SELECT id FROM nodes WHERE id = ANY(@ids::bigint[]) ORDER BY id FOR UPDATE
)
UPDATE nodes n SET consecutive_fail = b.fail, consecutive_ok = b.ok,
    last_probe_at = now(), last_probe_detail = b.detail, flapping = b.flapping
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@healths::text[]) AS health,
             unnest(@fails::int[]) AS fail, unnest(@oks::int[]) AS ok,
             unnest(@details::text[]) AS detail, unnest(@flappings::boolean[]) AS flapping) b
WHERE n.id = b.id AND n.health = b.health AND n.id IN (SELECT id FROM locked);

-- name: NodeGetForUpdate :one
SELECT * FROM nodes WHERE id = @id FOR UPDATE;

-- name: NodeLiveWorkCount :one
SELECT count(*)::bigint FROM work WHERE node_id = @node_id AND state IN ('assigned', 'active');
