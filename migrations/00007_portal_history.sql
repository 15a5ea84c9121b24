-- +goose Up

-- load_samples is each node's load and capacity once a minute, written by
-- the leader (one INSERT ... SELECT for all nodes) and kept for a day and
-- a bit, so the portal can chart load against capacity over time. The
-- minute is the key: a second leader in the same minute adds nothing.
CREATE TABLE load_samples (
    node_id  bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    at       timestamptz NOT NULL,
    used     integer NOT NULL,
    capacity integer NOT NULL,
    reported integer NOT NULL,
    eligible boolean NOT NULL,
    PRIMARY KEY (node_id, at)
);
CREATE INDEX load_samples_at_idx ON load_samples (at);

-- kind_samples is the live work per work kind once a minute (items and
-- units), written with load_samples, for the dashboard's trend chart.
CREATE TABLE kind_samples (
    at    timestamptz NOT NULL,
    kind  text NOT NULL,
    items bigint NOT NULL,
    units bigint NOT NULL,
    waiting bigint NOT NULL,
    PRIMARY KEY (at, kind)
);

-- node_health_history records every health change of a node, written by a
-- trigger so that every path that changes health (the checker, the first
-- heartbeat, a flap hold) is covered without each having to remember it.
-- Uptime over 24 h and 7 d is computed from these intervals exactly.
CREATE TABLE node_health_history (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id bigint NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT now(),
    health  text NOT NULL
);
CREATE INDEX node_health_history_node_at_idx ON node_health_history (node_id, at);

-- +goose StatementBegin
CREATE FUNCTION node_health_history_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.health IS DISTINCT FROM OLD.health THEN
        INSERT INTO node_health_history (node_id, at, health) VALUES (NEW.id, now(), NEW.health);
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER node_health_history_trg AFTER INSERT OR UPDATE OF health ON nodes
    FOR EACH ROW EXECUTE FUNCTION node_health_history_record();

INSERT INTO node_health_history (node_id, at, health)
SELECT id, health_changed_at, health FROM nodes;

-- E-mail addresses are unique whatever their case. Existing addresses are
-- stored in lower case; where two accounts differ only in case, the older
-- keeps the address and the newer ones are disabled, their sessions
-- ended, and renamed so an owner sees and resolves them.
WITH ranked AS (
    SELECT id, row_number() OVER (PARTITION BY lower(email) ORDER BY id) AS rn FROM users
), dups AS (
    UPDATE users u SET email = lower(u.email) || '.case-duplicate-' || u.id,
        disabled_at = coalesce(u.disabled_at, now()), updated_at = now()
    FROM ranked r WHERE r.id = u.id AND r.rn > 1
    RETURNING u.id, u.email
), ended AS (
    DELETE FROM sessions WHERE user_id IN (SELECT id FROM dups)
)
INSERT INTO audit_log (actor, action, target, result, detail)
SELECT 'migration', 'user.disable', email, 'ok', 'e-mail differed from an older account only in case'
FROM dups;
UPDATE users SET email = lower(email) WHERE email <> lower(email);
CREATE UNIQUE INDEX users_email_lower_idx ON users (lower(email));

-- +goose Down
DROP INDEX users_email_lower_idx;
DROP TRIGGER node_health_history_trg ON nodes;
DROP FUNCTION node_health_history_record();
DROP TABLE node_health_history, kind_samples, load_samples;
