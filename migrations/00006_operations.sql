-- +goose Up
-- Scheduled maintenance windows. A node is in maintenance while a window
-- that is not cancelled covers now; the start may lie in the future and a
-- node may have several. nodes.maintenance_until mirrors the window in
-- force (kept in step by nodes.Service.SyncMaintenance), so every query
-- that asks "is this node in maintenance" keeps reading one column.
CREATE TABLE maintenance_windows (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id      bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    reason       text NOT NULL,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    cancelled_by text NOT NULL DEFAULT '',
    CHECK (ends_at > starts_at)
);
CREATE INDEX maintenance_windows_node_idx ON maintenance_windows (node_id, starts_at);
CREATE INDEX maintenance_windows_live_idx ON maintenance_windows (ends_at) WHERE cancelled_at IS NULL;

-- Maintenance set before windows existed becomes a window.
INSERT INTO maintenance_windows (node_id, starts_at, ends_at, reason, created_by)
SELECT id, now(), maintenance_until, maintenance_reason, updated_by
FROM nodes WHERE maintenance_until > now();

-- API tokens carry a scope (read: GET only; admin: everything) and may expire.
ALTER TABLE api_tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'admin' CHECK (scope IN ('read', 'admin')),
    ADD COLUMN expires_at timestamptz;

-- An administrator acknowledges a down alert with a note: reminders stop
-- until the node recovers, and the recovery email names who acknowledged.
ALTER TABLE alerts
    ADD COLUMN acked_at timestamptz,
    ADD COLUMN acked_by text NOT NULL DEFAULT '',
    ADD COLUMN ack_note text NOT NULL DEFAULT '';
CREATE INDEX alerts_node_idx ON alerts (node_name, id DESC);

-- A work item's history: every change of its state, node or epoch, from
-- whichever path made it (placement, move, ack, end), written by a trigger
-- so no path can forget it. Pruned with the work row.
CREATE TABLE work_history (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_id   bigint NOT NULL REFERENCES work (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    state     text NOT NULL,
    node_id   bigint,
    node_name text NOT NULL DEFAULT '',
    epoch     bigint NOT NULL
);
CREATE INDEX work_history_work_idx ON work_history (work_id, id);

-- +goose StatementBegin
CREATE FUNCTION work_history_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO work_history (work_id, state, node_id, node_name, epoch)
    VALUES (NEW.id, NEW.state, NEW.node_id,
            coalesce((SELECT name FROM nodes WHERE id = NEW.node_id), ''), NEW.epoch);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER work_history_insert AFTER INSERT ON work
    FOR EACH ROW EXECUTE FUNCTION work_history_record();
CREATE TRIGGER work_history_update AFTER UPDATE ON work
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.node_id IS DISTINCT FROM NEW.node_id OR OLD.epoch IS DISTINCT FROM NEW.epoch)
    EXECUTE FUNCTION work_history_record();

-- +goose Down
DROP TRIGGER work_history_update ON work;
DROP TRIGGER work_history_insert ON work;
DROP FUNCTION work_history_record();
DROP TABLE work_history;
DROP INDEX alerts_node_idx;
ALTER TABLE alerts DROP COLUMN acked_at, DROP COLUMN acked_by, DROP COLUMN ack_note;
ALTER TABLE api_tokens DROP COLUMN scope, DROP COLUMN expires_at;
DROP TABLE maintenance_windows;
