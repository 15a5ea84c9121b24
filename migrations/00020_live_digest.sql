-- +goose Up
-- Each node keeps a digest of its live work (assigned or active): the XOR
-- of work_digest(id, epoch) over its items, kept by whatever changes them
-- (the work-history trigger, and work_place, which writes its own
-- history). An agent reports what it runs; when the digest of that report
-- is the node's, the two sets are the same, and reconciling the report
-- costs a read of the node's row and of its few assigned items instead of
-- all its live work (nodes.Service.Reconcile).
ALTER TABLE nodes ADD COLUMN live_digest bigint NOT NULL DEFAULT 0;

-- work_digest is an item's share of its node's digest: the first 64 bits
-- of the MD5 of "id:epoch" (nodes.workDigest computes the same).
-- +goose StatementBegin
CREATE FUNCTION work_digest(id bigint, epoch bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || left(md5(id::text || ':' || epoch::text), 16))::bit(64)::bigint
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_history_record_rows() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off SET jit = off SET enable_hashjoin = on SET enable_mergejoin = on SET enable_seqscan = on AS $$
DECLARE
    affected bigint[];
    left_ids bigint[];
    digest_ids bigint[];
    digest_xs bigint[];
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
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(c.node_id), array_agg(c.x) INTO digest_ids, digest_xs
            FROM (SELECT nw.node_id, bit_xor(work_digest(nw.id, nw.epoch)) AS x
                  FROM new_rows nw WHERE nw.node_id IS NOT NULL AND nw.state IN ('assigned', 'active')
                  GROUP BY nw.node_id) c;
        ELSE
            SELECT array_agg(c.node_id), array_agg(c.x) INTO digest_ids, digest_xs
            FROM (SELECT l.node_id, bit_xor(work_digest(l.id, l.epoch)) AS x
                  FROM (SELECT o.node_id, o.id, o.epoch FROM old_rows o
                        WHERE o.node_id IS NOT NULL AND o.state IN ('assigned', 'active')
                        UNION ALL
                        SELECT nw.node_id, nw.id, nw.epoch FROM new_rows nw
                        WHERE nw.node_id IS NOT NULL AND nw.state IN ('assigned', 'active')) l
                  GROUP BY l.node_id) c;
        END IF;
        UPDATE nodes n SET assign_version = v,
            resync_version = CASE WHEN n.id = ANY(left_ids) THEN v ELSE n.resync_version END,
            live_digest = n.live_digest # coalesce(d.x, 0)
        FROM unnest(affected) AS a(id)
        LEFT JOIN unnest(digest_ids, digest_xs) AS d(node_id, x) ON d.node_id = a.id
        WHERE n.id = a.id;
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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
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
        UPDATE nodes n SET used = n.used + d.delta, assign_version = v, live_digest = n.live_digest # d.x
        FROM (SELECT i.node_id, sum(i.cost)::integer AS delta, bit_xor(work_digest(i.id, i.epoch)) AS x FROM ins i
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

UPDATE nodes n SET live_digest = coalesce((SELECT bit_xor(work_digest(w.id, w.epoch)) FROM work w
    WHERE w.node_id = n.id AND w.state IN ('assigned', 'active')), 0);

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_place(p_refs text[], p_kinds text[], p_costs integer[], p_node_ids bigint[])
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
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION work_history_record_rows() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off SET jit = off SET enable_hashjoin = on SET enable_mergejoin = on SET enable_seqscan = on AS $$
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
DROP FUNCTION work_digest(bigint, bigint);
ALTER TABLE nodes DROP COLUMN live_digest;
