-- +goose Up
-- An ack (assigned to active) changes a work row's state and updated_at.
-- While an index named either column, in its key or in its predicate,
-- every ack wrote a new version of the row with a new entry in each of the
-- table's indexes (its key, its ref, its node's live work), and a history
-- row besides: half of an item's writes. Postgres updates a row in place
-- on its page (a HOT update: no index entry) when no indexed column
-- changes and the page has room.
--
-- So the indexes name the item's phase instead of its state: live
-- (assigned or active), unplaced or ended, a column Postgres computes from
-- the state. An ack leaves the phase as it was, so no index sees it; the
-- statements that want one state read the node's live items and check it
-- (a node holds a few hundred at most). The live index replaces the two
-- that split live work by state, so a placement writes one index entry
-- fewer. A page is filled only to half, so the acks of the rows just
-- placed on it find room there (with a quarter free, half of them did;
-- measured on 40,000 placements and their acks, the acks took 40 % less
-- time, the placements 4 % less).
ALTER TABLE work ADD COLUMN phase text NOT NULL
    GENERATED ALWAYS AS (CASE WHEN state IN ('assigned', 'active') THEN 'live' ELSE state END) STORED;
ALTER TABLE work SET (fillfactor = 50);

DROP INDEX work_node_live_idx;
DROP INDEX work_assigned_idx;
DROP INDEX work_unplaced_idx;
DROP INDEX work_ended_idx;
CREATE INDEX work_live_idx ON work (node_id) WHERE phase = 'live';
CREATE INDEX work_unplaced_idx ON work (kind, id) WHERE phase = 'unplaced';
CREATE INDEX work_ended_idx ON work (ended_at) WHERE phase = 'ended';

-- +goose Down
DROP INDEX work_live_idx;
DROP INDEX work_unplaced_idx;
DROP INDEX work_ended_idx;
ALTER TABLE work RESET (fillfactor);
ALTER TABLE work DROP COLUMN phase;
CREATE INDEX work_node_live_idx ON work (node_id) WHERE state IN ('assigned', 'active');
CREATE INDEX work_assigned_idx ON work (node_id, updated_at) WHERE state = 'assigned';
CREATE INDEX work_unplaced_idx ON work (kind, id) WHERE state = 'unplaced';
CREATE INDEX work_ended_idx ON work (ended_at) WHERE state = 'ended';
