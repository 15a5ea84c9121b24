-- +goose Up
-- work_place also says, for each item it places, its node's assignment
-- version before and after (the version the whole group draws). A call
-- manager hands what it placed to the assignment streams it serves as
-- deltas from the one version to the other, without reading them back:
-- a node's row is locked from before the version is drawn until commit,
-- so nothing else changes the node between the two.
DROP FUNCTION work_place(text[], text[], integer[], bigint[]);
-- +goose StatementBegin
CREATE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
RETURNS TABLE (id bigint, ref text, state text, epoch bigint, node bigint, prev_version bigint, new_version bigint)
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
        JOIN nodes o ON o.id = d.node_id
        WHERE n.id = d.node_id
        RETURNING n.id, n.name, o.assign_version AS prev
    ), history AS (
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch, version)
        SELECT i.id, i.state, i.node_id, coalesce(c.name, ''), i.epoch, CASE WHEN i.node_id IS NOT NULL THEN v END
        FROM ins i LEFT JOIN counters c ON c.id = i.node_id
        ORDER BY i.id
    )
    SELECT i.id, i.ref, i.state, i.epoch, i.node_id, c.prev, CASE WHEN i.node_id IS NOT NULL THEN v END
    FROM ins i LEFT JOIN counters c ON c.id = i.node_id;
    PERFORM set_config('callplane.history_written', 'off', true);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION work_place(text[], text[], integer[], bigint[]);
-- +goose StatementBegin
CREATE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
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
