-- +goose Up
-- Health semantics under faults (issue 11).

-- The health checker's last completed round, written by the leader inside
-- the round's fenced transaction, so every instance (portal footer,
-- banner, /readyz) sees whether a checker is really running.
CREATE TABLE checker_status (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     text NOT NULL DEFAULT '',
    epoch      bigint NOT NULL DEFAULT 0,
    started_at timestamptz,
    round_at   timestamptz,
    round_ms   integer NOT NULL DEFAULT 0,
    nodes      integer NOT NULL DEFAULT 0
);
INSERT INTO checker_status (id) VALUES (1);

-- The disruption guard: when more than a share of the nodes fail at once
-- the checker assumes it, not the nodes, has the problem. started_at is
-- NULL when there is no disruption; confirmed_at is set when an
-- administrator lets failover proceed during this disruption.
CREATE TABLE health_disruption (
    id           integer PRIMARY KEY CHECK (id = 1),
    started_at   timestamptz,
    failing      integer NOT NULL DEFAULT 0,
    total        integer NOT NULL DEFAULT 0,
    nodes        text NOT NULL DEFAULT '',
    confirmed_at timestamptz,
    confirmed_by text NOT NULL DEFAULT ''
);
INSERT INTO health_disruption (id) VALUES (1);

-- Up<->down transitions, the only thing flap detection counts.
CREATE TABLE health_transitions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id     bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    from_health text NOT NULL,
    to_health   text NOT NULL
);
CREATE INDEX health_transitions_node_idx ON health_transitions (node_id, at DESC);

-- Start hook failures per work item and node: the item is not placed on
-- that node again while the record is recent.
CREATE TABLE work_failures (
    work_id    bigint NOT NULL REFERENCES work (id) ON DELETE CASCADE,
    node_id    bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    failures   integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    last_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (work_id, node_id)
);
CREATE INDEX work_failures_node_idx ON work_failures (node_id, last_at DESC);

ALTER TABLE work ADD COLUMN last_error text NOT NULL DEFAULT '';

ALTER TABLE nodes
    -- agent_lost_since: the probe passes but the agent's heartbeat is stale.
    ADD COLUMN agent_lost_since   timestamptz,
    ADD COLUMN agent_lost_alerted boolean NOT NULL DEFAULT false,
    -- down_alerted: a DOWN email went out for the current outage, so its
    -- recovery is mailed too (and only then).
    ADD COLUMN down_alerted       boolean NOT NULL DEFAULT false,
    -- hold_until: a flapping node is held down until then.
    ADD COLUMN hold_until         timestamptz,
    ADD COLUMN last_hook_error    text NOT NULL DEFAULT '',
    ADD COLUMN last_hook_error_at timestamptz;
-- Nodes down now were alerted under the old rules; keep their recovery mail.
UPDATE nodes SET down_alerted = true WHERE health = 'down' AND admin_state <> 'disabled';

-- +goose Down
ALTER TABLE nodes DROP COLUMN agent_lost_since, DROP COLUMN agent_lost_alerted, DROP COLUMN down_alerted,
    DROP COLUMN hold_until, DROP COLUMN last_hook_error, DROP COLUMN last_hook_error_at;
ALTER TABLE work DROP COLUMN last_error;
DROP TABLE work_failures, health_transitions, health_disruption, checker_status;
