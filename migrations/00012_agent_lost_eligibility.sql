-- +goose Up
-- A node whose agent is lost (its service answers its probe, its agent has
-- stopped heartbeating) takes no new work that its agent must pick up: an
-- assignment waits in the long-poll nobody makes, is never acknowledged,
-- and moves on only when the ack watch gives up on it. So eligible now
-- also asks for an agent that is not lost. The SIP front door's calls go
-- straight to the media server and need no agent: answers_calls is
-- eligible without that clause. nodes.Node.Eligible and AnswersCalls are
-- the Go twins.
DROP VIEW node_eligibility;
CREATE VIEW node_eligibility AS
SELECT n.id, n.name, n.kind, n.capacity, n.weight, n.used,
    (n.admin_state = 'enabled' AND n.health = 'up' AND NOT n.flapping
     AND n.enrolled_at IS NOT NULL
     AND (n.maintenance_until IS NULL OR n.maintenance_until <= now())
     AND n.agent_lost_since IS NULL)::boolean AS eligible,
    (n.admin_state = 'enabled' AND n.health = 'up' AND NOT n.flapping
     AND n.enrolled_at IS NOT NULL
     AND (n.maintenance_until IS NULL OR n.maintenance_until <= now()))::boolean AS answers_calls
FROM nodes n;

-- +goose Down
DROP VIEW node_eligibility;
CREATE VIEW node_eligibility AS
SELECT n.id, n.name, n.kind, n.capacity, n.weight, n.used,
    (n.admin_state = 'enabled' AND n.health = 'up' AND NOT n.flapping
     AND n.enrolled_at IS NOT NULL
     AND (n.maintenance_until IS NULL OR n.maintenance_until <= now()))::boolean AS eligible
FROM nodes n;
