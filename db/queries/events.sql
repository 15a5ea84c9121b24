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

-- EventPage is one page of events for the API: filters, newest first,
-- after the cursor (the last id of the previous page; 0 for the first).
-- name: EventFind :many
SELECT * FROM events
WHERE (@cursor::bigint = 0 OR id < @cursor)
  AND (@node_name::text = '' OR node_name = @node_name)
  AND (@type::text = '' OR type = @type)
  AND (@severity::text = '' OR severity = @severity)
  AND (@actor::text = '' OR actor = @actor)
  AND (@since::timestamptz = '-infinity' OR at >= @since)
  AND (@until::timestamptz = 'infinity' OR at < @until)
  AND (@q::text = '' OR message ILIKE '%' || @q || '%')
ORDER BY id DESC LIMIT @lim;

-- name: EventPrune :execrows
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE at < now() - make_interval(secs => @older_than_seconds::float8) LIMIT @lim);
