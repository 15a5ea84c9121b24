-- WorkActivateRunning marks active the work an agent reports running that
-- is still recorded as assigned (its ack was lost). Rows another statement
-- holds are skipped: that is an ack in flight, which activates them itself,
-- and waiting for it would only queue the heartbeat behind it.
--
-- Each item is found by key, like the acks' (WorkAckActive): the node and
-- state conditions are written so no other index fits. Found through the
-- index of the node's live work, the reported items were compared with
-- each of the node's rows: a heartbeat reporting 10,000 items took 11 s,
-- long enough for the node to look lost.
-- name: WorkActivateRunning :execrows
UPDATE work w SET state = 'active', updated_at = now()
FROM (SELECT x.id FROM work x
      JOIN (SELECT unnest((SELECT @ids::bigint[])) AS id, unnest((SELECT @epochs::bigint[])) AS epoch) r ON r.id = x.id AND r.epoch = x.epoch
      WHERE x.node_id IS NOT DISTINCT FROM @node_id AND x.state NOT IN ('active', 'ended', 'unplaced')
      ORDER BY x.id FOR UPDATE OF x SKIP LOCKED) l
WHERE w.id = l.id;

-- WorkReconcileSame reconciles a node's report in one read of the node's
-- row when the report's digest (nodes.workDigest over what the agent
-- runs) is the node's live_digest: the agent runs exactly the node's live
-- work, so its items still recorded as assigned have started (their acks
-- were lost or are on their way) and become active. same is false, and
-- nothing is written, when the digests differ.
-- name: WorkReconcileSame :one
WITH n AS (
    SELECT live_digest = @digest::bigint AS same FROM nodes WHERE id = @node_id::bigint
), started AS (
    SELECT x.id FROM work x
    WHERE (SELECT same FROM n) AND x.node_id = @node_id::bigint AND x.state = 'assigned'
    ORDER BY x.id FOR UPDATE OF x SKIP LOCKED
), activated AS (
    UPDATE work w SET state = 'active', updated_at = now()
    FROM started s WHERE w.id = s.id
    RETURNING w.id
)
SELECT coalesce((SELECT same FROM n), false)::boolean AS same, (SELECT count(*) FROM activated)::bigint AS activated;
