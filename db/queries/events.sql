-- name: EventInsert :exec
INSERT INTO events (node_id, node_name, type, severity, message, actor)
VALUES (@node_id, @node_name, @type, @severity, @message, @actor);

-- name: EventList :many
SELECT * FROM events
WHERE (@node_name::text = '' OR node_name = @node_name)
  AND (@q::text = '' OR message ILIKE '%' || @q || '%' OR type ILIKE '%' || @q || '%' OR node_name ILIKE '%' || @q || '%')
ORDER BY id DESC LIMIT @lim;

-- Notify wakes every call manager's long-polls; it is sent once per
-- transaction, with the ids of the nodes whose assignments changed.
-- name: Notify :exec
SELECT pg_notify(@channel::text, @payload::text);

-- name: EventPrune :execrows
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE at < now() - make_interval(secs => @older_than_seconds::float8) LIMIT @lim);
