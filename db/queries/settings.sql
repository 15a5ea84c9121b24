-- name: SettingList :many
SELECT * FROM settings ORDER BY key;

-- name: SettingUpsert :exec
INSERT INTO settings (key, value, updated_by) VALUES (@key, @value, @updated_by)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now(), updated_by = excluded.updated_by;
