-- +goose Up
-- One row per SIP call the front door set up or refused: the dialog's
-- identity (so any instance routes its in-dialog requests and ends its
-- work), where it went, how many nodes were tried and why each failed, and
-- how it ended. The call's work item shares its ref.
CREATE TABLE sip_calls (
    ref         text PRIMARY KEY,
    work_id     bigint REFERENCES work (id) ON DELETE SET NULL,
    call_id     text NOT NULL,
    from_tag    text NOT NULL,
    to_tag      text NOT NULL DEFAULT '',
    from_uri    text NOT NULL DEFAULT '',
    to_uri      text NOT NULL DEFAULT '',
    -- node_id is the node the call was last sent to.
    node_id     bigint REFERENCES nodes (id) ON DELETE SET NULL,
    state       text NOT NULL CHECK (state IN ('setup', 'answered', 'ended', 'failed')),
    cause       text NOT NULL DEFAULT '',
    tries       integer NOT NULL DEFAULT 1,
    -- failovers holds the cause of every try that failed over to the next node.
    failovers   text[] NOT NULL DEFAULT '{}',
    instance    text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    answered_at timestamptz,
    ended_at    timestamptz
);
CREATE INDEX sip_calls_live_idx ON sip_calls (created_at) WHERE state IN ('setup', 'answered');
CREATE INDEX sip_calls_created_idx ON sip_calls (created_at);

-- +goose Down
DROP TABLE sip_calls;
