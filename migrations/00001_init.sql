-- +goose Up
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'admin', 'viewer')),
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Sessions are keyed by the SHA-256 of the cookie value so a database
-- leak does not hand out live sessions.
CREATE TABLE sessions (
    id_hash      bytea PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    source_addr  text NOT NULL DEFAULT '',
    user_agent   text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

-- Failed sign-ins, per account and per address, for throttling.
CREATE TABLE login_failures (
    id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL,
    at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_at_idx ON login_failures (key, at);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    result      text NOT NULL DEFAULT 'ok',
    source_addr text NOT NULL DEFAULT '',
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);

CREATE SEQUENCE assign_version_seq;

CREATE TABLE nodes (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    kind                text NOT NULL CHECK (kind IN ('media', 'ivr', 'queue', 'meeting', 'im')),
    address             text NOT NULL,
    capacity            integer NOT NULL CHECK (capacity > 0),
    weight              integer NOT NULL DEFAULT 100 CHECK (weight BETWEEN 1 AND 1000),
    region              text NOT NULL DEFAULT '',
    description         text NOT NULL DEFAULT '',
    admin_state         text NOT NULL DEFAULT 'enabled' CHECK (admin_state IN ('enabled', 'draining', 'disabled')),
    health              text NOT NULL DEFAULT 'pending' CHECK (health IN ('pending', 'up', 'suspect', 'down')),
    health_changed_at   timestamptz NOT NULL DEFAULT now(),
    consecutive_fail    integer NOT NULL DEFAULT 0,
    consecutive_ok      integer NOT NULL DEFAULT 0,
    last_probe_at       timestamptz,
    last_probe_detail   text NOT NULL DEFAULT '',
    flapping            boolean NOT NULL DEFAULT false,
    maintenance_until   timestamptz,
    maintenance_reason  text NOT NULL DEFAULT '',
    -- used is the sum of the cost of work assigned to the node, kept in
    -- step with the work table inside the same transactions.
    used                integer NOT NULL DEFAULT 0,
    assign_version      bigint NOT NULL DEFAULT nextval('assign_version_seq'),
    enrolled_at         timestamptz,
    agent_version       text NOT NULL DEFAULT '',
    last_heartbeat_at   timestamptz,
    reported_load       integer NOT NULL DEFAULT 0,
    -- rotate_requested asks the agent's next heartbeat to take a new credential.
    rotate_requested    boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          text NOT NULL DEFAULT ''
);
CREATE INDEX nodes_kind_idx ON nodes (kind, admin_state, health);

CREATE TABLE join_tokens (
    id           text PRIMARY KEY,
    node_id      bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    secret_hash  bytea NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    used_by_addr text NOT NULL DEFAULT '',
    revoked_at   timestamptz
);
CREATE INDEX join_tokens_node_idx ON join_tokens (node_id);

CREATE TABLE node_credentials (
    id          text PRIMARY KEY,
    node_id     bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- expires_at is set on the old credential when it is rotated, giving
    -- the agent a short overlap to pick up the new one.
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX node_credentials_node_idx ON node_credentials (node_id);

CREATE TABLE api_tokens (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE work (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ref        text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('call', 'ivr', 'queue', 'meeting', 'im')),
    cost       integer NOT NULL CHECK (cost > 0),
    state      text NOT NULL CHECK (state IN ('assigned', 'active', 'ended', 'unplaced')),
    node_id    bigint REFERENCES nodes (id) ON DELETE SET NULL,
    epoch      bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz
);
CREATE INDEX work_node_live_idx ON work (node_id) WHERE state IN ('assigned', 'active');
CREATE INDEX work_unplaced_idx ON work (kind, id) WHERE state = 'unplaced';
CREATE INDEX work_state_kind_idx ON work (state, kind);

CREATE TABLE events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    node_id   bigint REFERENCES nodes (id) ON DELETE SET NULL,
    node_name text NOT NULL DEFAULT '',
    type      text NOT NULL,
    severity  text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'critical')),
    message   text NOT NULL,
    actor     text NOT NULL DEFAULT ''
);
CREATE INDEX events_at_idx ON events (at DESC);
CREATE INDEX events_node_idx ON events (node_id, at DESC);

CREATE TABLE probe_results (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id    bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    ok         boolean NOT NULL,
    latency_us bigint NOT NULL,
    detail     text NOT NULL
);
CREATE INDEX probe_results_node_idx ON probe_results (node_id, at DESC);

CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL DEFAULT ''
);

-- The leader lease: one row, a growing epoch. The leader's writes run in
-- transactions that first lock this row FOR SHARE with its epoch, so a
-- paused ex-leader's writes change nothing.
CREATE TABLE leader_lease (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     text NOT NULL,
    epoch      bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO leader_lease (id, holder, epoch, expires_at) VALUES (1, '', 0, '-infinity');

-- The alert outbox: written in the same transaction as the health change,
-- sent by the mailer, retried with backoff, never lost.
CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    type            text NOT NULL,
    node_name       text NOT NULL DEFAULT '',
    payload         jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text NOT NULL DEFAULT '',
    sent_at         timestamptz,
    email_id        text NOT NULL DEFAULT ''
);
CREATE INDEX alerts_pending_idx ON alerts (next_attempt_at) WHERE state = 'pending';

-- +goose Down
DROP TABLE alerts, leader_lease, settings, probe_results, events, work, api_tokens,
    node_credentials, join_tokens, nodes, audit_log, login_failures, sessions, users;
DROP SEQUENCE assign_version_seq;
