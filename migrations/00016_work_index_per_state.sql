-- +goose Up
-- Every placement and every ack wrote an entry in work_state_kind_idx, an
-- index of every work row by state: an ack changes the state, so the row
-- gets a new version and each index of work a new entry. The statements
-- that look work up by state (not acked in time, ended long ago) want few
-- rows of one state, so partial indexes serve them: an ack (assigned to
-- active) now enters none of them, and a placement one small entry.
-- (work_ended_idx, by ended_at where ended, came with 00004.)
DROP INDEX work_state_kind_idx;
CREATE INDEX work_assigned_idx ON work (node_id, updated_at) WHERE state = 'assigned';

-- +goose Down
DROP INDEX work_assigned_idx;
CREATE INDEX work_state_kind_idx ON work (state, kind);
