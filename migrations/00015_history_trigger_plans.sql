-- +goose Up
-- The work-history trigger joins a statement's old and new rows (its
-- transition tables) by id. PL/pgSQL plans each statement of a function
-- once per session and keeps the plan, made for the transition tables'
-- sizes at that first call (they have no other statistics). In a session
-- whose first change was one row the kept plan was a nested loop, run
-- again for a grouped ack of thousands of items: an ack of 3,962 rows
-- compared 15.7 million pairs and took 1.4 s inside the trigger, holding
-- its work rows, and so the agents' next acks, all that time. In a
-- session whose first change was large, the kept plan expected millions
-- of joined rows (the planner cannot know the join is one to one) and
-- was compiled by JIT on every later call, 8 ms for a change of one row.
--
-- So the function plans without nested loops and without JIT: the two
-- sides are joined by hashing or merging, in time that grows with the
-- rows of the statement whatever size the plan was made for. A node's
-- name is read by key for each row (a sub-select, not a join), so that a
-- change of one row does not read every node.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_history_record_rows() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off SET jit = off AS $$
DECLARE
    affected bigint[];
    left_ids bigint[];
    v bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT nw.node_id ORDER BY nw.node_id) INTO affected
        FROM new_rows nw WHERE nw.node_id IS NOT NULL;
    ELSE
        SELECT array_agg(DISTINCT x.id ORDER BY x.id), array_agg(DISTINCT o.node_id) FILTER (WHERE o.node_id IS DISTINCT FROM nw.node_id)
        INTO affected, left_ids
        FROM new_rows nw JOIN old_rows o ON o.id = nw.id
        CROSS JOIN LATERAL (VALUES (nw.node_id), (o.node_id)) x(id)
        WHERE x.id IS NOT NULL
          AND (o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
               OR (o.state IS DISTINCT FROM nw.state AND NOT (o.state = 'assigned' AND nw.state = 'active')));
    END IF;
    IF affected IS NOT NULL THEN
        PERFORM 1 FROM nodes n WHERE n.id = ANY(affected) ORDER BY n.id FOR NO KEY UPDATE;
        v := nextval('assign_version_seq');
        UPDATE nodes n SET assign_version = v,
            resync_version = CASE WHEN n.id = ANY(left_ids) THEN v ELSE n.resync_version END
        WHERE n.id = ANY(affected);
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch, version)
        SELECT nw.id, nw.state, nw.node_id, coalesce((SELECT n.name FROM nodes n WHERE n.id = nw.node_id), ''), nw.epoch,
            CASE WHEN nw.node_id IS NOT NULL THEN v END
        FROM new_rows nw
        ORDER BY nw.id;
    ELSE
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch, version)
        SELECT nw.id, nw.state, nw.node_id, coalesce((SELECT n.name FROM nodes n WHERE n.id = nw.node_id), ''), nw.epoch,
            CASE WHEN nw.node_id IS NOT NULL
                  AND (o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
                       OR NOT (o.state = 'assigned' AND nw.state = 'active')) THEN v END
        FROM new_rows nw JOIN old_rows o ON o.id = nw.id
        WHERE o.state IS DISTINCT FROM nw.state OR o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
        ORDER BY nw.id;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_history_record_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    affected bigint[];
    left_ids bigint[];
    v bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT nw.node_id ORDER BY nw.node_id) INTO affected
        FROM new_rows nw WHERE nw.node_id IS NOT NULL;
    ELSE
        SELECT array_agg(DISTINCT x.id ORDER BY x.id), array_agg(DISTINCT o.node_id) FILTER (WHERE o.node_id IS DISTINCT FROM nw.node_id)
        INTO affected, left_ids
        FROM new_rows nw JOIN old_rows o ON o.id = nw.id
        CROSS JOIN LATERAL (VALUES (nw.node_id), (o.node_id)) x(id)
        WHERE x.id IS NOT NULL
          AND (o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
               OR (o.state IS DISTINCT FROM nw.state AND NOT (o.state = 'assigned' AND nw.state = 'active')));
    END IF;
    IF affected IS NOT NULL THEN
        PERFORM 1 FROM nodes n WHERE n.id = ANY(affected) ORDER BY n.id FOR NO KEY UPDATE;
        v := nextval('assign_version_seq');
        UPDATE nodes n SET assign_version = v,
            resync_version = CASE WHEN n.id = ANY(left_ids) THEN v ELSE n.resync_version END
        WHERE n.id = ANY(affected);
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch, version)
        SELECT nw.id, nw.state, nw.node_id, coalesce(n.name, ''), nw.epoch,
            CASE WHEN nw.node_id IS NOT NULL THEN v END
        FROM new_rows nw LEFT JOIN nodes n ON n.id = nw.node_id
        ORDER BY nw.id;
    ELSE
        INSERT INTO work_history (work_id, state, node_id, node_name, epoch, version)
        SELECT nw.id, nw.state, nw.node_id, coalesce(n.name, ''), nw.epoch,
            CASE WHEN nw.node_id IS NOT NULL
                  AND (o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
                       OR NOT (o.state = 'assigned' AND nw.state = 'active')) THEN v END
        FROM new_rows nw JOIN old_rows o ON o.id = nw.id
        LEFT JOIN nodes n ON n.id = nw.node_id
        WHERE o.state IS DISTINCT FROM nw.state OR o.node_id IS DISTINCT FROM nw.node_id OR o.epoch IS DISTINCT FROM nw.epoch
        ORDER BY nw.id;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
