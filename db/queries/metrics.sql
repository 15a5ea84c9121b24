-- Queries the /metrics collector runs on every scrape: each is one scan
-- of a small table or an index, grouped so cardinality stays bounded.

-- name: MetricsNodes :many
SELECT id, name, kind, admin_state, health, capacity, used, reported_load,
    last_heartbeat_at, last_probe_at, flapping,
    (maintenance_until IS NOT NULL AND maintenance_until > now())::boolean AS in_maintenance
FROM nodes ORDER BY id;

-- name: MetricsAlerts :many
SELECT type, state, count(*)::bigint AS n, coalesce(sum(attempts), 0)::bigint AS attempts,
    count(*) FILTER (WHERE acked_at IS NOT NULL)::bigint AS acked
FROM alerts GROUP BY type, state;

-- name: MetricsLeader :one
SELECT holder, epoch FROM leader_lease WHERE id = 1;
