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

-- NodeLiveDigestMatchBatch says, for several nodes' reports at once,
-- which of each report's digests (nodes.workDigest over what the agent
-- runs, ord 1, then that XOR the items of this instance's latest
-- placements on the node, newest first, ord 2 on: a report may lag the
-- deliveries on their way) is its node's live_digest, the first by ord,
-- and lists that node's items still assigned. Nodes none of whose digests
-- match are left out. It reads the nodes' rows and the live items of the
-- nodes that match, not the rest of their work.
-- name: NodeLiveDigestMatchBatch :many
SELECT m.node_id::bigint AS node_id, m.matched::int AS matched,
    coalesce(a.ids, '{}')::bigint[] AS assigned_ids, coalesce(a.epochs, '{}')::bigint[] AS assigned_epochs
FROM (
    SELECT n.id AS node_id, min(c.ord) AS matched
    FROM (SELECT unnest(@node_ids::bigint[]) AS node_id, unnest(@digests::bigint[]) AS digest, unnest(@ords::int[]) AS ord) c
    JOIN nodes n ON n.id = c.node_id AND n.live_digest = c.digest
    GROUP BY n.id
) m
LEFT JOIN LATERAL (
    SELECT array_agg(w.id ORDER BY w.id) AS ids, array_agg(w.epoch ORDER BY w.id) AS epochs
    FROM work w WHERE w.node_id = m.node_id AND w.phase = 'live' AND w.state = 'assigned'
) a ON true;
