-- +goose Up
-- node_eligibility is the one SQL definition of a node that may take new
-- work: enabled, up, not held down for flapping, enrolled, and not in
-- maintenance. Every placement query reads it (FOR UPDATE locks the
-- underlying nodes rows); nodes.Node.Eligible is its Go twin.
CREATE VIEW node_eligibility AS
SELECT n.id, n.name, n.kind, n.capacity, n.weight, n.used,
    (n.admin_state = 'enabled' AND n.health = 'up' AND NOT n.flapping
     AND n.enrolled_at IS NOT NULL
     AND (n.maintenance_until IS NULL OR n.maintenance_until <= now()))::boolean AS eligible
FROM nodes n;

-- Retention: ended work, events, audit rows, sent alerts and probe results
-- are pruned by the leader; their ages are settings (see nodes/retention.go).
CREATE INDEX work_ended_idx ON work (ended_at) WHERE state = 'ended';
CREATE INDEX alerts_created_idx ON alerts (created_at) WHERE state <> 'pending';
CREATE INDEX probe_results_at_idx ON probe_results (at);

-- +goose Down
DROP INDEX probe_results_at_idx;
DROP INDEX alerts_created_idx;
DROP INDEX work_ended_idx;
DROP VIEW node_eligibility;
