-- The long tables of the portal and the API, one page at a time: filters, a sort column
-- and direction, and a keyset cursor (the last row's sort key and id).
-- Sorting by time is sorting by id (both grow together), whose key is
-- the empty string, so the default order walks the primary key.

-- name: EventPage :many
SELECT * FROM (
    SELECT e.*, (CASE @sort::text
        WHEN 'severity' THEN CASE e.severity WHEN 'critical' THEN '3' WHEN 'warning' THEN '2' ELSE '1' END
        WHEN 'node' THEN lower(e.node_name)
        WHEN 'type' THEN e.type
        WHEN 'actor' THEN lower(e.actor)
        ELSE '' END)::text AS sort_key
    FROM events e
    WHERE (@node_name::text = '' OR e.node_name = @node_name)
      AND (@type::text = '' OR e.type = @type)
      AND (@severity::text = '' OR e.severity = @severity)
      AND (@actor::text = '' OR e.actor = @actor)
      AND (sqlc.narg(since)::timestamptz IS NULL OR e.at >= sqlc.narg(since))
      AND (sqlc.narg(until)::timestamptz IS NULL OR e.at < sqlc.narg(until))
      AND (@q::text = '' OR e.message ILIKE '%' || @q || '%' OR e.type ILIKE '%' || @q || '%' OR e.node_name ILIKE '%' || @q || '%')
      AND (@message::text = '' OR e.message ILIKE '%' || @message || '%')
) s
WHERE @after_id::bigint = 0
   OR (@descending::boolean AND (s.sort_key, s.id) < (@after_key::text, @after_id))
   OR (NOT @descending::boolean AND (s.sort_key, s.id) > (@after_key::text, @after_id))
ORDER BY CASE WHEN @descending::boolean THEN s.sort_key END DESC, CASE WHEN @descending::boolean THEN s.id END DESC,
    s.sort_key, s.id
LIMIT @lim;

-- name: AuditPage :many
SELECT * FROM (
    SELECT a.*, (CASE @sort::text
        WHEN 'actor' THEN lower(a.actor)
        WHEN 'action' THEN a.action
        WHEN 'target' THEN lower(a.target)
        WHEN 'result' THEN a.result
        WHEN 'source' THEN a.source_addr
        ELSE '' END)::text AS sort_key
    FROM audit_log a
    WHERE (@actor::text = '' OR a.actor = @actor)
      AND (@action::text = '' OR a.action = @action OR a.action LIKE @action || '.%')
      AND (@target::text = '' OR a.target = @target)
      AND (@result::text = '' OR a.result = @result)
      AND (sqlc.narg(since)::timestamptz IS NULL OR a.at >= sqlc.narg(since))
      AND (sqlc.narg(until)::timestamptz IS NULL OR a.at < sqlc.narg(until))
      AND (@q::text = '' OR a.actor ILIKE '%' || @q || '%' OR a.action ILIKE '%' || @q || '%' OR a.target ILIKE '%' || @q || '%')
      AND (@detail::text = '' OR a.detail ILIKE '%' || @detail || '%' OR a.target ILIKE '%' || @detail || '%')
) s
WHERE @after_id::bigint = 0
   OR (@descending::boolean AND (s.sort_key, s.id) < (@after_key::text, @after_id))
   OR (NOT @descending::boolean AND (s.sort_key, s.id) > (@after_key::text, @after_id))
ORDER BY CASE WHEN @descending::boolean THEN s.sort_key END DESC, CASE WHEN @descending::boolean THEN s.id END DESC,
    s.sort_key, s.id
LIMIT @lim;

-- name: WorkPage :many
SELECT * FROM (
    SELECT w.id, w.ref, w.kind, w.cost, w.state, w.node_id, w.epoch, w.created_at, w.updated_at, w.ended_at, w.last_error,
        coalesce(n.name, '')::text AS node_name,
        (CASE @sort::text
            WHEN 'ref' THEN lower(w.ref)
            WHEN 'kind' THEN w.kind
            WHEN 'cost' THEN lpad(w.cost::text, 12, '0')
            WHEN 'state' THEN w.state
            WHEN 'node' THEN lower(coalesce(n.name, ''))
            WHEN 'epoch' THEN lpad(w.epoch::text, 20, '0')
            WHEN 'updated' THEN to_char(w.updated_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISSUS')
            ELSE '' END)::text AS sort_key
    FROM work w LEFT JOIN nodes n ON n.id = w.node_id
    WHERE (@node_id::bigint = 0 OR w.node_id = @node_id)
      AND (@kind::text = '' OR w.kind = @kind)
      AND (@state::text = '' OR w.state = @state)
      AND (@q::text = '' OR w.ref ILIKE '%' || @q || '%')
) s
WHERE @after_id::bigint = 0
   OR (@descending::boolean AND (s.sort_key, s.id) < (@after_key::text, @after_id))
   OR (NOT @descending::boolean AND (s.sort_key, s.id) > (@after_key::text, @after_id))
ORDER BY CASE WHEN @descending::boolean THEN s.sort_key END DESC, CASE WHEN @descending::boolean THEN s.id END DESC,
    s.sort_key, s.id
LIMIT @lim;
