-- WorkActivateRunning marks active the work an agent reports running that
-- is still recorded as assigned (its ack was lost). Rows another statement
-- holds are skipped: that is an ack in flight, which activates them itself,
-- and waiting for it would only queue the heartbeat behind it.
-- name: WorkActivateRunning :execrows
UPDATE work w SET state = 'active', updated_at = now()
FROM (SELECT x.id FROM work x
      JOIN (SELECT unnest((SELECT @ids::bigint[])) AS id, unnest((SELECT @epochs::bigint[])) AS epoch) r ON r.id = x.id AND r.epoch = x.epoch
      WHERE x.node_id = @node_id AND x.state = 'assigned'
      ORDER BY x.id FOR UPDATE OF x SKIP LOCKED) l
WHERE w.id = l.id;
