-- name: WorkActivateRunning :execrows
UPDATE work w SET state = 'active', updated_at = now()
FROM (SELECT unnest(@ids::bigint[]) AS id, unnest(@epochs::bigint[]) AS epoch) r
WHERE w.id = r.id AND w.epoch = r.epoch AND w.node_id = @node_id AND w.state = 'assigned';
