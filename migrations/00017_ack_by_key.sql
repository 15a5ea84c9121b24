-- +goose Up
-- The active acks of many agents are recorded together (WorkAckActive),
-- now mostly a few at a time, as each agent's heartbeat brings them.
-- Postgres keeps a generic plan of that prepared statement once it has run
-- a few times, made for the work table as it was then: on a new cluster's
-- first minutes of load, a small table, which a hash join over a scan of
-- all live work suits. Kept while the table grew, that plan read all live
-- work for every group of acks: 27,000 rows for an ack of one item in
-- the bench. So the acks go through this function, which looks each item
-- up by key whatever the table's size or statistics: no scan of the whole
-- table, no hash or merge join, a nested loop of lookups by primary key.
-- Each ack is fenced by its node, its epoch and a live state, and the
-- function returns the acks that matched (an item acked twice in one call
-- matches once).
-- +goose StatementBegin
CREATE FUNCTION work_ack_active(p_ids bigint[], p_epochs bigint[], p_node_ids bigint[])
RETURNS TABLE (id bigint, node_id bigint, epoch bigint) LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    RETURN QUERY
    UPDATE work w SET state = 'active', updated_at = now()
    FROM unnest(p_ids, p_epochs, p_node_ids) AS a(id, epoch, node_id)
    WHERE w.id = a.id AND w.node_id IS NOT DISTINCT FROM a.node_id AND w.epoch = a.epoch AND w.state NOT IN ('ended', 'unplaced')
    RETURNING w.id, a.node_id, a.epoch;
END
$$;
-- +goose StatementEnd

-- The work-history trigger runs inside that function's settings: it names
-- all of its own, or it could be left with no join method but the nested
-- loop it is written to avoid (00015).
ALTER FUNCTION work_history_record_rows() SET enable_hashjoin = on;
ALTER FUNCTION work_history_record_rows() SET enable_mergejoin = on;
ALTER FUNCTION work_history_record_rows() SET enable_seqscan = on;

-- +goose Down
ALTER FUNCTION work_history_record_rows() RESET enable_seqscan;
ALTER FUNCTION work_history_record_rows() RESET enable_mergejoin;
ALTER FUNCTION work_history_record_rows() RESET enable_hashjoin;
DROP FUNCTION work_ack_active(bigint[], bigint[], bigint[]);
