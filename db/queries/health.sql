-- Queries of the health checker (nodes/health).

-- NodeProbeBatch records one probe round for the nodes whose health did not
-- change, in one statement. A node whose health changed under the checker
-- (a first heartbeat, say) is skipped: its row no longer matches health.
-- name: NodeProbeBatch :exec
UPDATE nodes n SET consecutive_fail = b.fail, consecutive_ok = b.ok,
    last_probe_at = now(), last_probe_detail = b.detail, flapping = b.flapping
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@healths::text[]) AS health,
             unnest(@fails::int[]) AS fail, unnest(@oks::int[]) AS ok,
             unnest(@details::text[]) AS detail, unnest(@flappings::boolean[]) AS flapping) b
WHERE n.id = b.id AND n.health = b.health;

-- name: NodeGetForUpdate :one
SELECT * FROM nodes WHERE id = @id FOR UPDATE;

-- name: NodeLiveWorkCount :one
SELECT count(*)::bigint FROM work WHERE node_id = @node_id AND state IN ('assigned', 'active');
