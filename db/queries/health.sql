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
SELECT count(*)::bigint FROM work WHERE node_id = @node_id AND phase = 'live';

-- name: CheckerStart :exec
UPDATE checker_status SET holder = @holder, epoch = @epoch, started_at = now() WHERE id = 1;

-- CheckerRound records a completed round; it runs inside the round's fenced
-- transaction.
-- name: CheckerRound :exec
UPDATE checker_status SET holder = @holder, epoch = @epoch, round_at = now(),
    round_ms = @round_ms, nodes = @nodes
WHERE id = 1;

-- name: CheckerStatusGet :one
SELECT c.*, now()::timestamptz AS db_now FROM checker_status c WHERE id = 1;

-- name: DisruptionGet :one
SELECT * FROM health_disruption WHERE id = 1;

-- name: DisruptionSet :exec
UPDATE health_disruption SET started_at = @started_at, failing = @failing, total = @total, nodes = @nodes,
    confirmed_at = CASE WHEN @started_at::timestamptz IS NULL THEN NULL ELSE confirmed_at END,
    confirmed_by = CASE WHEN @started_at::timestamptz IS NULL THEN '' ELSE confirmed_by END
WHERE id = 1;

-- name: DisruptionConfirm :one
UPDATE health_disruption SET confirmed_at = now(), confirmed_by = @confirmed_by
WHERE id = 1 AND started_at IS NOT NULL AND confirmed_at IS NULL
RETURNING *;

-- name: TransitionInsert :exec
INSERT INTO health_transitions (node_id, from_health, to_health) VALUES (@node_id, @from_health, @to_health);

-- TransitionCount counts a node's up<->down transitions within the window.
-- name: TransitionCount :one
SELECT count(*)::int FROM health_transitions
WHERE node_id = @node_id AND at > now() - make_interval(secs => @window_seconds::float8);

-- name: TransitionDeleteForNode :exec
DELETE FROM health_transitions WHERE node_id = @node_id;

-- name: TransitionPrune :execrows
DELETE FROM health_transitions WHERE at < now() - interval '1 day';

-- name: NodeSetAgentLost :exec
UPDATE nodes SET agent_lost_since = @agent_lost_since, agent_lost_alerted = @agent_lost_alerted WHERE id = @id;

-- name: NodeSetDownAlerted :exec
UPDATE nodes SET down_alerted = @down_alerted WHERE id = @id;

-- name: NodeClearHold :one
UPDATE nodes SET flapping = false, hold_until = NULL, updated_at = now(), updated_by = @updated_by
WHERE id = @id RETURNING *;
