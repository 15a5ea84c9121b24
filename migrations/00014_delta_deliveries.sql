-- +goose Up
-- Delta deliveries. A long-poll used to answer with the node's whole
-- desired set on every change, so placing a few items on a node that runs
-- hundreds re-read and re-sent all of them. An agent may now ask for what
-- changed since the version it has (GET /api/v1/assignments?since=V&delta=1).
--
-- What changed is read from work_history, which a statement trigger
-- already writes for every change of a work item's state, node or epoch.
-- The same trigger now also bumps the assignment version of every node a
-- change concerns (the node the item is on, and the one it left) and
-- stamps the history rows with that version: no path can change what an
-- agent must run without its node's version moving and the change being
-- findable by version. It locks those nodes (in id order, like every
-- statement that locks several nodes) before it draws the version, so a
-- node's versions grow in commit order and a reader that sees a node at
-- version V sees every history row stamped V or less for it.
--
-- An item that leaves a node (moved, or unplaced after a failed start)
-- makes that node's agent take its whole set again (resync_version): the
-- common changes (placed, ended) are deltas, the rare ones resyncs.
--
-- A change an agent made itself (assigned -> active, its own ack or the
-- reconciliation of a lost one) is history but not a delivery: it is not
-- stamped and moves no version, as before.
ALTER TABLE work_history ADD COLUMN version bigint; -- the node version the change was delivered at (NULL: not a delivery)
CREATE INDEX work_history_node_version_idx ON work_history (node_id, version) WHERE version IS NOT NULL;

-- History rows no longer reference their work row by a foreign key: the
-- key's check locked the work row just written (a second WAL record for
-- every placement and every ack). Pruning ended work deletes its history
-- in the same statement (WorkPruneEnded), as the cascade did.
ALTER TABLE work_history DROP CONSTRAINT work_history_work_id_fkey;

-- A node's row is rewritten many times a second under load (its counter
-- and version with every placement, heartbeats, probes). Full pages made
-- every such update a new tuple on another page with new index entries,
-- and the table grew by thousands of dead rows a minute between vacuums,
-- which every read of nodes then walked. With room left on each page the
-- updates stay on their page (HOT) and are pruned in place.
ALTER TABLE nodes SET (fillfactor = 25);

-- resync_version: the agent must take the whole set again (work left the
-- node, or reconciliation found the agent running something else): a
-- delta is only served to an agent whose version is at least this one.
ALTER TABLE nodes ADD COLUMN resync_version bigint NOT NULL DEFAULT 0;

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

-- work_place as in 00009, but it locks the chosen nodes FOR NO KEY UPDATE
-- (it changes no key, so the foreign-key checks of other writers' work
-- rows need not queue behind it) and leaves the version bump to the
-- history trigger.
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

-- +goose Down
ALTER TABLE nodes RESET (fillfactor);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
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
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_history_record_rows() RETURNS trigger LANGUAGE plpgsql AS $$
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
ALTER TABLE nodes DROP COLUMN resync_version;
DELETE FROM work_history h WHERE NOT EXISTS (SELECT 1 FROM work w WHERE w.id = h.work_id);
ALTER TABLE work_history ADD CONSTRAINT work_history_work_id_fkey FOREIGN KEY (work_id) REFERENCES work (id) ON DELETE CASCADE;
DROP INDEX work_history_node_version_idx;
ALTER TABLE work_history DROP COLUMN version;
