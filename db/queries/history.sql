-- Histories the portal charts: load samples, work per kind and health
-- changes. The leader writes the samples once a minute and prunes them.

-- LoadSampleAll samples every node's load, and whether it could take new
-- work (node_eligibility, the one definition), once per minute; the minute
-- is the key, so a second writer in the same minute adds nothing.
-- name: LoadSampleAll :execrows
INSERT INTO load_samples (node_id, at, used, capacity, reported, eligible)
SELECT n.id, date_trunc('minute', now()), n.used, n.capacity, n.reported_load, e.eligible
FROM nodes n JOIN node_eligibility e ON e.id = n.id
ON CONFLICT (node_id, at) DO NOTHING;

-- KindSampleAll samples the live and waiting work per work kind.
-- name: KindSampleAll :execrows
INSERT INTO kind_samples (at, kind, items, units, waiting)
SELECT date_trunc('minute', now()), k.kind,
    count(w.id) FILTER (WHERE w.state IN ('assigned', 'active')),
    coalesce(sum(w.cost) FILTER (WHERE w.state IN ('assigned', 'active')), 0),
    count(w.id) FILTER (WHERE w.state = 'unplaced')
FROM unnest(@kinds::text[]) AS k(kind)
LEFT JOIN work w ON w.kind = k.kind AND w.state <> 'ended'
GROUP BY k.kind
ON CONFLICT (at, kind) DO NOTHING;

-- name: LoadSamplePrune :execrows
DELETE FROM load_samples WHERE at < now() - make_interval(secs => @keep_seconds::float8);

-- name: KindSamplePrune :execrows
DELETE FROM kind_samples WHERE at < now() - make_interval(secs => @keep_seconds::float8);

-- HealthHistoryPrune deletes health changes older than keep, except the
-- newest old one of each node: it says what the node was at the start of
-- the window.
-- name: HealthHistoryPrune :execrows
DELETE FROM node_health_history h
WHERE h.at < now() - make_interval(secs => @keep_seconds::float8)
  AND EXISTS (SELECT 1 FROM node_health_history n
              WHERE n.node_id = h.node_id AND n.at < now() - make_interval(secs => @keep_seconds::float8)
                AND (n.at, n.id) > (h.at, h.id));

-- name: LoadSampleListByNode :many
SELECT at, used, capacity, reported, eligible FROM load_samples
WHERE node_id = @node_id AND at > now() - make_interval(secs => @window_seconds::float8)
ORDER BY at;

-- name: KindSampleList :many
SELECT at, kind, items, units, waiting FROM kind_samples
WHERE at > now() - make_interval(secs => @window_seconds::float8)
ORDER BY at, kind;

-- NodeUptime is the time a node spent up and the time its health was
-- known (not pending) within the window ending now, in seconds.
-- name: NodeUptime :one
WITH h AS (
    SELECT health, at, lead(at, 1, now()) OVER (ORDER BY at, id) AS until
    FROM node_health_history WHERE node_id = @node_id
), c AS (
    SELECT health, greatest(at, now() - make_interval(secs => @window_seconds::float8)) AS a, until
    FROM h WHERE until > now() - make_interval(secs => @window_seconds::float8)
)
SELECT coalesce(sum(extract(epoch FROM until - a)) FILTER (WHERE health = 'up'), 0)::float8 AS up_seconds,
       coalesce(sum(extract(epoch FROM until - a)) FILTER (WHERE health <> 'pending'), 0)::float8 AS known_seconds
FROM c;

-- ProbeResultBuckets aggregates a node's probe results of the last
-- window into buckets: passes, failures, mean and worst latency.
-- name: ProbeResultBuckets :many
SELECT date_bin(make_interval(secs => @bucket_seconds::float8), at, TIMESTAMPTZ '2000-01-01 00:00:00+00')::timestamptz AS bucket,
    count(*) FILTER (WHERE ok)::bigint AS oks,
    count(*) FILTER (WHERE NOT ok)::bigint AS fails,
    coalesce(avg(latency_us) FILTER (WHERE ok), 0)::bigint AS avg_us,
    coalesce(max(latency_us), 0)::bigint AS max_us
FROM probe_results
WHERE node_id = @node_id AND at > now() - make_interval(secs => @window_seconds::float8)
GROUP BY 1 ORDER BY 1;

-- NodeIncidents lists the nodes that fail now (down or suspect, not
-- disabled) with the work they carry, longest failing first.
-- name: NodeIncidents :many
SELECT n.id, n.name, n.kind, n.health, n.health_changed_at, n.last_probe_detail, n.admin_state,
    n.flapping, n.maintenance_until, n.last_heartbeat_at, n.enrolled_at, n.consecutive_fail,
    coalesce(w.items, 0)::bigint AS items, coalesce(w.units, 0)::bigint AS units
FROM nodes n
LEFT JOIN LATERAL (
    SELECT count(*) AS items, sum(cost) AS units FROM work
    WHERE node_id = n.id AND phase = 'live'
) w ON true
WHERE n.health IN ('down', 'suspect') AND n.admin_state <> 'disabled'
ORDER BY n.health = 'suspect', n.health_changed_at, n.name
LIMIT @lim;

-- NodeMaxCapacity is the capacity of the largest node of a kind (0 when
-- none is registered): work that costs more can never be placed.
-- name: NodeMaxCapacity :one
SELECT coalesce(max(capacity), 0)::int AS capacity FROM nodes WHERE kind = @kind;
