-- name: WorkHistoryList :many
SELECT * FROM work_history WHERE work_id = @work_id ORDER BY id LIMIT @lim;
