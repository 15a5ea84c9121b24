-- +goose Up

-- A placement transaction is two statements between BEGIN and COMMIT: one
-- reads the candidates, the planner (nodes.Plan, in Go) plans, one writes
-- the plan. Each used to be several round trips (the turn, the read; the
-- lock, the insert, the counters), which on a busy machine cost more than
-- the work itself.

-- node_placement_candidates makes placements of new work of the same node
-- kinds take turns across instances (a transaction-level advisory lock per
-- node kind, in name order), bounds how long the rest of the transaction
-- waits for a row lock, and returns the eligible nodes of those kinds. It
-- is VOLATILE, so the read takes its snapshot after the turn is granted:
-- it sees every placement committed by the turns before it. A placement
-- may then wait for one node while holding others; when that closes a
-- cycle with a writer that locks out of id order (SetAdminState locks its
-- node first), it gives up after 200 ms, well before Postgres's deadlock
-- detector (1 s by default) would pick a victim, and the retry policy
-- runs it again.
-- +goose StatementBegin
CREATE FUNCTION node_placement_candidates(p_kinds text[])
RETURNS TABLE (id bigint, name text, kind text, capacity integer, used integer, weight integer)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885433171, hashtext(ks.k))
    FROM (SELECT DISTINCT unnest(p_kinds) AS k ORDER BY 1) ks;
    PERFORM set_config('lock_timeout', '200ms', true);
    RETURN QUERY
    SELECT e.id, e.name, e.kind, e.capacity, e.used, e.weight FROM node_eligibility e
    WHERE e.eligible AND e.kind = ANY(p_kinds)
    ORDER BY e.id;
END
$$;
-- +goose StatementEnd

-- work_place writes a placement plan: item i is p_refs[i] of p_kinds[i]
-- and cost p_costs[i], on node p_node_ids[i] (0: unplaced). It locks the
-- chosen nodes in id order (the order every statement that locks several
-- nodes takes), checks the plan against their latest state (eligible, and
-- room for their share) and fails with serialization_failure, for the
-- retry policy to run the transaction again, when it no longer holds. It
-- then inserts the work rows, skipping a ref that exists already (absent
-- from the answer, so the caller can name the conflicts and roll back),
-- and adds each node's share of what was inserted to its used counter and
-- bumps its assignment version, so the counter stays equal to the sum of
-- its live work.
-- +goose StatementBegin
CREATE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
RETURNS TABLE (id bigint, ref text, state text, epoch bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    fits boolean;
BEGIN
    PERFORM 1 FROM node_eligibility e WHERE e.id = ANY(p_node_ids) ORDER BY e.id FOR UPDATE;
    SELECT count(e.id) = count(*) AND coalesce(bool_and(e.eligible AND e.used + s.delta <= e.capacity), true)
    INTO fits
    FROM (SELECT t.node_id, sum(t.cost) AS delta
          FROM unnest(p_node_ids, p_costs) AS t(node_id, cost)
          WHERE t.node_id <> 0 GROUP BY t.node_id) s
    LEFT JOIN node_eligibility e ON e.id = s.node_id;
    IF NOT fits THEN
        RAISE EXCEPTION 'the placement plan no longer holds' USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO work AS w (ref, kind, cost, state, node_id)
        SELECT t.ref, t.kind, t.cost, CASE WHEN t.node_id = 0 THEN 'unplaced' ELSE 'assigned' END, NULLIF(t.node_id, 0)
        FROM unnest(p_refs, p_kinds, p_costs, p_node_ids) AS t(ref, kind, cost, node_id)
        ON CONFLICT ON CONSTRAINT work_ref_key DO NOTHING
        RETURNING w.id, w.ref, w.state, w.epoch, w.node_id, w.cost
    ), counters AS (
        UPDATE nodes n SET used = n.used + d.delta, assign_version = nextval('assign_version_seq')
        FROM (SELECT i.node_id, sum(i.cost)::integer AS delta FROM ins i
              WHERE i.node_id IS NOT NULL GROUP BY i.node_id) d
        WHERE n.id = d.node_id
    )
    SELECT i.id, i.ref, i.state, i.epoch FROM ins i;
END
$$;
-- +goose StatementEnd

-- The history of work items is written once per statement from its
-- transition tables instead of once per row: a placement or an ack of a
-- thousand items runs one INSERT ... SELECT, not a thousand function calls.
-- +goose StatementBegin
CREATE FUNCTION work_history_record_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch)
        SELECT nw.id, nw.state, nw.node_id, coalesce(n.name, ''), nw.epoch
        FROM new_rows nw LEFT JOIN nodes n ON n.id = nw.node_id
        ORDER BY nw.id;
    ELSE
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch)
        SELECT nw.id, nw.state, nw.node_id, coalesce(n.name, ''), nw.epoch
        FROM new_rows nw JOIN old_rows o ON o.id = nw.id
        LEFT JOIN nodes n ON n.id = nw.node_id
        WHERE o.state IS DISTINCT FROM nw.state OR o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
        ORDER BY nw.id;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

DROP TRIGGER work_history_update ON work;
DROP TRIGGER work_history_insert ON work;
DROP FUNCTION work_history_record();
CREATE TRIGGER work_history_insert AFTER INSERT ON work
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION work_history_record_rows();
CREATE TRIGGER work_history_update AFTER UPDATE ON work
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION work_history_record_rows();

-- +goose Down
DROP TRIGGER work_history_update ON work;
DROP TRIGGER work_history_insert ON work;
DROP FUNCTION work_history_record_rows();
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
DROP FUNCTION work_place(text[], text[], integer[], bigint[]);
DROP FUNCTION node_placement_candidates(text[]);
