-- name: AuditInsert :exec
INSERT INTO audit_log (actor, action, target, result, source_addr, detail)
VALUES (@actor, @action, @target, @result, @source_addr, @detail);

-- name: AuditList :many
SELECT * FROM audit_log
WHERE (@q::text = '' OR actor ILIKE '%' || @q || '%' OR action ILIKE '%' || @q || '%' OR target ILIKE '%' || @q || '%')
ORDER BY id DESC LIMIT @lim;
