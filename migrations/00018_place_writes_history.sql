-- +goose Up
-- work_place writes the history of what it places itself, in the same
-- statement, instead of leaving it to the work-history trigger. The
-- trigger is general (any insert of work) and so, for every placement
-- group, went over the chosen nodes three times more: it locked them
-- again, updated each a second time for its assignment version (a second
-- row version of every chosen node, beside the counter's), and looked up
-- each item's node name. work_place has the nodes locked already (in id
-- order, before it draws the version, so a node's versions still grow in
-- commit order), sets the counter and the version in one update, and
-- takes the names from that update. The history rows are the trigger's:
-- one per item, placed or unplaced, stamped with the version for placed
-- ones.
--
-- The trigger steps aside only while work_place says so, in a setting
-- local to its transaction that it clears when its statement is done.
DROP TRIGGER work_history_insert ON work;
CREATE TRIGGER work_history_insert AFTER INSERT ON work
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('callplane.history_written', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION work_history_record_rows();

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
RETURNS TABLE (id bigint, ref text, state text, epoch bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    fits boolean;
    v bigint;
BEGIN
    PERFORM 1 FROM node_eligibility e WHERE e.id = ANY(p_node_ids) ORDER BY e.id FOR NO KEY UPDATE;
    SELECT count(e.id) = count(*) AND coalesce(bool_and(e.eligible AND e.used + s.delta <= e.capacity), true)
    INTO fits
    FROM (SELECT t.node_id, sum(t.cost) AS delta
          FROM unnest(p_node_ids, p_costs) AS t(node_id, cost)
          WHERE t.node_id <> 0 GROUP BY t.node_id) s
    LEFT JOIN node_eligibility e ON e.id = s.node_id;
    IF NOT fits THEN
        RAISE EXCEPTION 'the placement plan no longer holds' USING ERRCODE = 'serialization_failure';
    END IF;
    v := nextval('assign_version_seq');
    PERFORM set_config('callplane.history_written', 'on', true);
    RETURN QUERY
    WITH ins AS (
        INSERT INTO work AS w (ref, kind, cost, state, node_id)
        SELECT t.ref, t.kind, t.cost, CASE WHEN t.node_id = 0 THEN 'unplaced' ELSE 'assigned' END, NULLIF(t.node_id, 0)
        FROM unnest(p_refs, p_kinds, p_costs, p_node_ids) AS t(ref, kind, cost, node_id)
        ON CONFLICT ON CONSTRAINT work_ref_key DO NOTHING
        RETURNING w.id, w.ref, w.state, w.epoch, w.node_id, w.cost
    ), counters AS (
        UPDATE nodes n SET used = n.used + d.delta, assign_version = v
        FROM (SELECT i.node_id, sum(i.cost)::integer AS delta FROM ins i
              WHERE i.node_id IS NOT NULL GROUP BY i.node_id) d
        WHERE n.id = d.node_id
        RETURNING n.id, n.name
    ), history AS (
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch, version)
        SELECT i.id, i.state, i.node_id, coalesce(c.name, ''), i.epoch, CASE WHEN i.node_id IS NOT NULL THEN v END
        FROM ins i LEFT JOIN counters c ON c.id = i.node_id
        ORDER BY i.id
    )
    SELECT i.id, i.ref, i.state, i.epoch FROM ins i;
    PERFORM set_config('callplane.history_written', 'off', true);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER work_history_insert ON work;
CREATE TRIGGER work_history_insert AFTER INSERT ON work
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION work_history_record_rows();
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
RETURNS TABLE (id bigint, ref text, state text, epoch bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    fits boolean;
BEGIN
    PERFORM 1 FROM node_eligibility e WHERE e.id = ANY(p_node_ids) ORDER BY e.id FOR NO KEY UPDATE;
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
        UPDATE nodes n SET used = n.used + d.delta
        FROM (SELECT i.node_id, sum(i.cost)::integer AS delta FROM ins i
              WHERE i.node_id IS NOT NULL GROUP BY i.node_id) d
        WHERE n.id = d.node_id
    )
    SELECT i.id, i.ref, i.state, i.epoch FROM ins i;
END
$$;
-- +goose StatementEnd
