-- name: AuditInsert :exec
INSERT INTO audit_log (actor, action, target, result, source_addr, detail)
VALUES (@actor, @action, @target, @result, @source_addr, @detail);

-- name: AuditList :many
SELECT * FROM audit_log
WHERE (@q::text = '' OR actor ILIKE '%' || @q || '%' OR action ILIKE '%' || @q || '%' OR target ILIKE '%' || @q || '%')
ORDER BY id DESC LIMIT @lim;

-- AuditPage is one page of the audit log for the API: filters, newest
-- first, after the cursor (the last id of the previous page; 0 for the
-- first).
-- name: AuditFind :many
SELECT * FROM audit_log
WHERE (@cursor::bigint = 0 OR id < @cursor)
  AND (@actor::text = '' OR actor = @actor)
  AND (@action::text = '' OR action = @action OR action LIKE @action || '.%')
  AND (@target::text = '' OR target = @target)
  AND (@result::text = '' OR result = @result)
  AND (@since::timestamptz = '-infinity' OR at >= @since)
  AND (@until::timestamptz = 'infinity' OR at < @until)
  AND (@q::text = '' OR detail ILIKE '%' || @q || '%' OR target ILIKE '%' || @q || '%')
ORDER BY id DESC LIMIT @lim;

-- name: AuditPrune :execrows
DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE at < now() - make_interval(secs => @older_than_seconds::float8) LIMIT @lim);
