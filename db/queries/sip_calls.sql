-- Queries of the SIP front door (nodes/sipfront through nodes/calls.go).
-- Every call is a durable row; the hot path is one statement per step.

-- SipCallPlaceOn places one call's work item on the node the planner
-- chose (its row locked by SipMediaLockEligible in the same transaction)
-- and records the call. It places nothing when live work with the same
-- ref exists (a merged request); the answer says so. A ref whose work
-- ended (an INVITE sent again after an authentication challenge, or the
-- next try of a call whose node failed) is placed again. @retry marks a
-- failover try of the same call: its tries and failovers carry on.
-- name: SipCallPlaceOn :one
WITH dup AS (
    SELECT 1 AS x FROM work WHERE ref = @ref::text AND state <> 'ended'
), bumped AS (
    UPDATE nodes SET used = nodes.used + 1, assign_version = nextval('assign_version_seq')
    WHERE nodes.id = @node_id::bigint AND NOT EXISTS (SELECT 1 FROM dup)
    RETURNING nodes.id, nodes.name, nodes.address
), placed AS (
    INSERT INTO work (ref, kind, cost, state, node_id)
    SELECT @ref::text, 'call', 1, 'assigned', b.id FROM bumped b
    ON CONFLICT (ref) DO UPDATE SET state = 'assigned', node_id = excluded.node_id,
        epoch = work.epoch + 1, updated_at = now(), ended_at = NULL
    WHERE work.state = 'ended'
    RETURNING id, node_id, epoch
), call AS (
    INSERT INTO sip_calls (ref, work_id, call_id, from_tag, from_uri, to_uri, node_id, state, instance)
    SELECT @ref::text, p.id, @call_id::text, @from_tag::text, @from_uri::text, @to_uri::text, p.node_id, 'setup', @instance::text
    FROM placed p
    ON CONFLICT (ref) DO UPDATE SET work_id = excluded.work_id, node_id = excluded.node_id, state = 'setup',
        call_id = excluded.call_id, from_tag = excluded.from_tag, from_uri = excluded.from_uri, to_uri = excluded.to_uri,
        instance = excluded.instance, cause = '', to_tag = '', answered_at = NULL, ended_at = NULL,
        tries = CASE WHEN @retry::boolean THEN sip_calls.tries + 1 ELSE 1 END,
        failovers = CASE WHEN @retry::boolean THEN sip_calls.failovers ELSE '{}' END,
        created_at = CASE WHEN @retry::boolean THEN sip_calls.created_at ELSE now() END
    RETURNING ref
)
SELECT coalesce((SELECT id FROM placed), 0)::bigint AS work_id,
       coalesce((SELECT epoch FROM placed), 0)::bigint AS epoch,
       coalesce((SELECT id FROM bumped), 0)::bigint AS node_id,
       coalesce((SELECT name FROM bumped), '')::text AS node_name,
       coalesce((SELECT address FROM bumped), '')::text AS node_address,
       EXISTS (SELECT 1 FROM dup) AS duplicate,
       (SELECT count(*) FROM call)::bigint AS recorded;

-- SipCallFailover ends the placement of a try that failed (the node
-- answered 408 or 5xx, timed out or could not be reached) and notes why,
-- so the next try can place the call elsewhere.
-- name: SipCallFailover :one
WITH ended AS (
    UPDATE work SET state = 'ended', ended_at = now(), updated_at = now()
    WHERE ref = @ref::text AND state IN ('assigned', 'active')
    RETURNING id, node_id, cost
), freed AS (
    UPDATE nodes n SET used = greatest(n.used - e.cost, 0), assign_version = nextval('assign_version_seq')
    FROM ended e WHERE n.id = e.node_id
    RETURNING n.id
), noted AS (
    UPDATE sip_calls SET failovers = array_append(failovers, @cause::text)
    WHERE ref = @ref::text
    RETURNING ref
)
SELECT coalesce((SELECT id FROM freed), 0)::bigint AS node_id, (SELECT count(*) FROM noted)::bigint AS noted;

-- SipCallEnd ends a call and its work in one statement: the work item (if
-- still live) ends and its node's load drops, the call row takes its final
-- state and cause. With @record, a call that has no row yet (refused before
-- any node was tried) is recorded failed.
-- name: SipCallEnd :one
WITH ended AS (
    UPDATE work SET state = 'ended', ended_at = now(), updated_at = now()
    WHERE ref = @ref::text AND state IN ('assigned', 'active')
    RETURNING id, node_id, cost
), freed AS (
    UPDATE nodes n SET used = greatest(n.used - e.cost, 0), assign_version = nextval('assign_version_seq')
    FROM ended e WHERE n.id = e.node_id
    RETURNING n.id
), closed AS (
    UPDATE sip_calls SET state = @state::text, cause = @cause::text, ended_at = now()
    WHERE ref = @ref::text AND state IN ('setup', 'answered')
    RETURNING ref
), recorded AS (
    INSERT INTO sip_calls (ref, call_id, from_tag, from_uri, to_uri, state, cause, tries, instance, ended_at)
    SELECT @ref::text, @call_id::text, @from_tag::text, @from_uri::text, @to_uri::text, @state::text, @cause::text, 0, @instance::text, now()
    WHERE @record::boolean
    ON CONFLICT (ref) DO NOTHING
    RETURNING ref
)
SELECT coalesce((SELECT id FROM freed), 0)::bigint AS node_id,
       ((SELECT count(*) FROM closed) + (SELECT count(*) FROM recorded))::bigint AS ended;

-- SipCallAnswered marks many calls answered in one statement (the front
-- door groups them): their To tag completes the dialog's identity.
-- The batch statements below test a call's state with NOT IN, not with
-- the live states: that form matches the live-call partial indexes, which
-- the planner, with statistics taken while few calls were live, scans
-- whole (thousands of rows under 10,000 held calls) instead of looking
-- the batch's refs up in the primary key.
-- name: SipCallAnswered :exec
UPDATE sip_calls c SET state = 'answered', answered_at = a.at, to_tag = a.to_tag
FROM (SELECT unnest(@refs::text[]) AS ref, unnest(@to_tags::text[]) AS to_tag,
             unnest(@ats::timestamptz[]) AS at) a
WHERE c.ref = a.ref AND c.state NOT IN ('answered', 'ended', 'failed');

-- SipCallLookup finds the dialog of an in-dialog request by the refs its
-- two tags derive, with the node its work runs on now (it may have moved).
-- name: SipCallLookup :one
SELECT c.ref, c.from_tag, c.state, coalesce(w.state, '')::text AS work_state,
       coalesce(n.name, '')::text AS node_name, coalesce(n.address, '')::text AS node_address
FROM sip_calls c
LEFT JOIN work w ON w.id = c.work_id
LEFT JOIN nodes n ON n.id = w.node_id
WHERE c.ref = ANY (@refs::text[]) AND c.call_id = @call_id::text
ORDER BY (c.state IN ('setup', 'answered')) DESC
LIMIT 1;

-- SipCallsExpire ends, in bulk, live calls older than the maximum call
-- duration (calls that never saw a BYE). It returns the nodes whose load
-- must be recounted.
-- name: SipCallsExpire :many
WITH old AS (
    SELECT ref FROM sip_calls
    WHERE state IN ('setup', 'answered') AND created_at < now() - make_interval(secs => @max_seconds::float8)
    ORDER BY created_at LIMIT 5000
    FOR UPDATE SKIP LOCKED
), closed AS (
    UPDATE sip_calls c SET state = 'ended', cause = 'max duration', ended_at = now()
    FROM old WHERE c.ref = old.ref
    RETURNING c.ref
), ended AS (
    UPDATE work w SET state = 'ended', ended_at = now(), updated_at = now()
    FROM closed WHERE w.ref = closed.ref AND w.state IN ('assigned', 'active')
    RETURNING w.node_id
)
SELECT DISTINCT coalesce(node_id, 0)::bigint AS node_id FROM ended;

-- SipCallPrune forgets calls that ended more than a day ago, as work is.
-- name: SipCallPrune :execrows
DELETE FROM sip_calls WHERE state IN ('ended', 'failed') AND ended_at < now() - interval '1 day';

-- SipNodeTimedOut counts a node that let a call setup time out as a
-- failed probe, the way the health checker records one: a probe result
-- and one more consecutive failure, which the checker's next round judges
-- against its threshold.
-- name: SipNodeTimedOut :exec
WITH res AS (
    INSERT INTO probe_results (node_id, ok, latency_us, detail)
    VALUES (@node_id::bigint, false, @latency_us::bigint, @detail::text)
)
UPDATE nodes SET consecutive_fail = consecutive_fail + 1, consecutive_ok = 0,
    last_probe_at = now(), last_probe_detail = @detail::text
WHERE id = @node_id::bigint AND health IN ('up', 'suspect');

-- SipCallLiveByNode counts the live calls on each media node.
-- name: SipCallLiveByNode :many
SELECT n.name, n.address, n.capacity, n.weight, n.health, n.admin_state,
       (n.maintenance_until IS NOT NULL AND n.maintenance_until > now())::boolean AS in_maintenance,
       count(w.id)::bigint AS calls
FROM nodes n
LEFT JOIN work w ON w.node_id = n.id AND w.kind = 'call' AND w.phase = 'live'
WHERE n.kind = 'media'
GROUP BY n.id ORDER BY n.name;

-- SipCallRecent counts calls set up over the last @seconds, and how many
-- of them failed, were answered and failed over.
-- name: SipCallRecent :one
SELECT count(*)::bigint AS calls,
       count(*) FILTER (WHERE state = 'failed')::bigint AS failed,
       count(*) FILTER (WHERE answered_at IS NOT NULL)::bigint AS answered,
       coalesce(sum(cardinality(failovers)), 0)::bigint AS failovers,
       count(*) FILTER (WHERE state IN ('setup', 'answered'))::bigint AS live
FROM sip_calls WHERE created_at > now() - make_interval(secs => @seconds::float8);

-- SipCallFailureCauses counts, over the last @seconds, the causes of
-- failed calls and of failed tries that went over to another node.
-- name: SipCallFailureCauses :many
SELECT kind, cause, count(*)::bigint AS n FROM (
    SELECT 'call'::text AS kind, cause FROM sip_calls
    WHERE state = 'failed' AND created_at > now() - make_interval(secs => @seconds::float8)
    UNION ALL
    SELECT 'try'::text AS kind, unnest(failovers) AS cause FROM sip_calls
    WHERE cardinality(failovers) > 0 AND created_at > now() - make_interval(secs => @seconds::float8)
    UNION ALL
    SELECT 'ended'::text AS kind, cause FROM sip_calls
    WHERE state = 'ended' AND cause = 'max duration' AND ended_at > now() - make_interval(secs => @seconds::float8)
) c GROUP BY kind, cause ORDER BY kind, n DESC, cause;

-- name: SipSettings :many
SELECT key, value FROM settings WHERE key LIKE 'sip\_%' ORDER BY key;

-- SipMediaLockEligible locks the media nodes that may take new calls
-- (node_eligibility, the one definition; answers_calls, as a call goes
-- straight to the media server and a lost agent does not matter), in id
-- order (the order every multi-node writer locks in), with their service
-- addresses, for
-- placements planned under the locks: one lock per node per batch instead
-- of one per call, which is what lets placements keep pace with the calls.
-- name: SipMediaLockEligible :many
SELECT e.id, e.name, n.address, e.capacity, e.used, e.weight
FROM node_eligibility e JOIN nodes n ON n.id = e.id
WHERE e.answers_calls AND e.kind = 'media'
ORDER BY e.id
FOR UPDATE OF n;

-- SipCallPlaceBatch records a planned batch of calls in one statement:
-- their work items (a ref that exists already is skipped and absent from
-- the answer, for the caller to place one by one), their call rows, and
-- each node's new load.
-- name: SipCallPlaceBatch :many
WITH w AS (
    INSERT INTO work (ref, kind, cost, state, node_id)
    SELECT t.ref, 'call', 1, 'assigned', t.node_id
    FROM (SELECT unnest(@refs::text[]) AS ref, unnest(@node_ids::bigint[]) AS node_id) t
    ON CONFLICT (ref) DO NOTHING
    RETURNING id, ref, node_id, epoch
), c AS (
    INSERT INTO sip_calls (ref, work_id, call_id, from_tag, from_uri, to_uri, node_id, state, instance)
    SELECT w.ref, w.id, t.call_id, t.from_tag, t.from_uri, t.to_uri, w.node_id, 'setup', @instance::text
    FROM w JOIN (SELECT unnest(@refs::text[]) AS ref, unnest(@call_ids::text[]) AS call_id,
        unnest(@from_tags::text[]) AS from_tag, unnest(@from_uris::text[]) AS from_uri,
        unnest(@to_uris::text[]) AS to_uri) t ON t.ref = w.ref
    ON CONFLICT (ref) DO UPDATE SET work_id = excluded.work_id, node_id = excluded.node_id, state = 'setup',
        call_id = excluded.call_id, from_tag = excluded.from_tag, from_uri = excluded.from_uri, to_uri = excluded.to_uri,
        instance = excluded.instance, cause = '', to_tag = '', answered_at = NULL, ended_at = NULL,
        tries = 1, failovers = '{}', created_at = now()
), u AS (
    UPDATE nodes n SET used = n.used + d.n, assign_version = nextval('assign_version_seq')
    FROM (SELECT node_id, count(*)::int AS n FROM w GROUP BY node_id) d
    WHERE n.id = d.node_id
)
SELECT id, ref, node_id::bigint AS node_id, epoch FROM w;

-- SipCallEndBatch ends many calls in one statement, as SipCallEnd does
-- one: their live work ends, their nodes' load drops, their rows take
-- their final state and cause (and, for a call whose answer had not been
-- written yet, its answer: one row update instead of two). Ending a call
-- that has ended already
-- changes nothing, so an end sent twice ends the work once. It returns
-- the nodes whose load dropped, with how much.
-- name: SipCallEndBatch :many
WITH ended AS (
    UPDATE work SET state = 'ended', ended_at = now(), updated_at = now()
    WHERE ref = ANY (@refs::text[]) AND state NOT IN ('ended', 'unplaced')
    RETURNING node_id, cost
), d AS (
    SELECT node_id, sum(cost)::int AS cost FROM ended WHERE node_id IS NOT NULL GROUP BY node_id
), lk AS (
    SELECT id FROM nodes WHERE id IN (SELECT node_id FROM d) ORDER BY id FOR UPDATE
), freed AS (
    UPDATE nodes n SET used = greatest(n.used - d.cost, 0), assign_version = nextval('assign_version_seq')
    FROM d WHERE n.id = d.node_id AND n.id IN (SELECT id FROM lk)
    RETURNING n.id
), closed AS (
    UPDATE sip_calls c SET state = x.state, cause = x.cause, ended_at = now(),
        answered_at = CASE WHEN x.answered THEN x.answered_at ELSE c.answered_at END,
        to_tag = CASE WHEN x.answered THEN x.to_tag ELSE c.to_tag END
    FROM (SELECT unnest(@refs::text[]) AS ref, unnest(@states::text[]) AS state, unnest(@causes::text[]) AS cause,
                 unnest(@answered::boolean[]) AS answered, unnest(@answered_ats::timestamptz[]) AS answered_at,
                 unnest(@to_tags::text[]) AS to_tag) x
    WHERE c.ref = x.ref AND c.state NOT IN ('ended', 'failed')
)
SELECT f.id AS node_id, d.cost::bigint AS freed FROM freed f JOIN d ON d.node_id = f.id;
