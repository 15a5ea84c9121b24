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

-- NodeLiveDigestMatch says which of a report's digests (nodes.workDigest
-- over what the agent runs, then that XOR the items of this instance's
-- latest placements on the node, newest first: a report may lag the
-- deliveries on their way) is the node's live_digest, 1-based, 0 for none,
-- and, when one is, lists the node's items still assigned. It reads the
-- node's row and its assigned items, not the rest of its live work.
-- name: NodeLiveDigestMatch :one
SELECT coalesce(array_position(@digests::bigint[], n.live_digest), 0)::int AS matched,
    coalesce(a.ids, '{}')::bigint[] AS assigned_ids, coalesce(a.epochs, '{}')::bigint[] AS assigned_epochs
FROM nodes n
LEFT JOIN LATERAL (
    SELECT array_agg(w.id ORDER BY w.id) AS ids, array_agg(w.epoch ORDER BY w.id) AS epochs
    FROM work w WHERE n.live_digest = ANY(@digests::bigint[]) AND w.node_id = n.id AND w.phase = 'live' AND w.state = 'assigned'
) a ON true
WHERE n.id = @node_id::bigint;
