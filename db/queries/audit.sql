-- name: AuditInsert :exec
INSERT INTO audit_log (actor, action, target, result, source_addr, detail)
VALUES (@actor, @action, @target, @result, @source_addr, @detail);

-- name: AuditPrune :execrows
DELETE FROM audit_log WHERE id IN (
    SELECT id FROM audit_log WHERE at < now() - make_interval(secs => @older_than_seconds::float8) LIMIT @lim);
