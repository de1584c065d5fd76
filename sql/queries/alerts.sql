-- Named queries of the alert lifecycle (activities/alerts.py, activities/pipeline.py,
-- altaviz/app/commands/alerts.py). Every one runs inside altaviz.core.db.tenant(), so row-level
-- security confines it to one organization.

-- name: latest_alert_for_workflow
SELECT alert_id, state, last_breach_hour, seq
FROM alert_history
WHERE workflow_id = %(workflow_id)s
ORDER BY breach_hour DESC
LIMIT 1

-- name: alert_by_id
SELECT alert_id, org_id, compressor_id, site_id, rule_id, rule_set_id, rule_version, metric,
       value, threshold, severity, condition_state, ack_state, state, breach_hour,
       last_breach_hour, opened_at, escalated_at, acknowledged_at, acknowledged_by, ack_channel,
       ack_comment, cleared_at, resolved_at, resolved_by, resolve_reason, workflow_id, run_id,
       escalation_delay_hours, diagnosis, seq, updated_at, run_ids
FROM alert_history
WHERE alert_id = %(alert_id)s

-- name: upsert_alert
INSERT INTO alert_history (
    alert_id, org_id, compressor_id, site_id, rule_id, rule_set_id, rule_version, metric, value,
    threshold, severity, condition_state, ack_state, state, breach_hour, last_breach_hour,
    opened_at, escalated_at, acknowledged_at, acknowledged_by, ack_channel, ack_comment,
    cleared_at, resolved_at, resolved_by, resolve_reason, workflow_id, run_id,
    escalation_delay_hours, diagnosis, seq, run_ids)
VALUES (
    %(alert_id)s, %(org_id)s, %(compressor_id)s, %(site_id)s, %(rule_id)s, %(rule_set_id)s,
    %(rule_version)s, %(metric)s, %(value)s, %(threshold)s, %(severity)s, %(condition_state)s,
    %(ack_state)s, %(state)s, %(breach_hour)s, %(last_breach_hour)s, %(opened_at)s,
    %(escalated_at)s, %(acknowledged_at)s, %(acknowledged_by)s, %(ack_channel)s,
    %(ack_comment)s, %(cleared_at)s, %(resolved_at)s, %(resolved_by)s, %(resolve_reason)s,
    %(workflow_id)s, %(run_id)s, %(escalation_delay_hours)s, %(diagnosis)s, %(seq)s,
    CASE WHEN %(run_id)s::text IS NULL THEN '{}'::text[] ELSE ARRAY[%(run_id)s::text] END)
ON CONFLICT (alert_id) DO UPDATE SET
    value = EXCLUDED.value, threshold = EXCLUDED.threshold, severity = EXCLUDED.severity,
    condition_state = EXCLUDED.condition_state, ack_state = EXCLUDED.ack_state,
    state = EXCLUDED.state, last_breach_hour = EXCLUDED.last_breach_hour,
    escalated_at = EXCLUDED.escalated_at, acknowledged_at = EXCLUDED.acknowledged_at,
    acknowledged_by = EXCLUDED.acknowledged_by, ack_channel = EXCLUDED.ack_channel,
    ack_comment = EXCLUDED.ack_comment, cleared_at = EXCLUDED.cleared_at,
    resolved_at = EXCLUDED.resolved_at, resolved_by = EXCLUDED.resolved_by,
    resolve_reason = EXCLUDED.resolve_reason, run_id = EXCLUDED.run_id,
    diagnosis = EXCLUDED.diagnosis, seq = EXCLUDED.seq
WHERE alert_history.seq < EXCLUDED.seq

-- name: add_run_id
-- Remembers a run of the alert's workflow chain (whether or not its write moved the state).
UPDATE alert_history SET run_ids = run_ids || %(run_id)s::text
WHERE alert_id = %(alert_id)s AND NOT (%(run_id)s::text = ANY (run_ids))

-- name: insert_alert_event
INSERT INTO alert_events (event_key, alert_id, org_id, event_type, occurred_at, actor, details)
VALUES (%(event_key)s, %(alert_id)s, %(org_id)s, %(event_type)s, %(occurred_at)s, %(actor)s,
        %(details)s)
ON CONFLICT (event_key) DO NOTHING

-- name: resolved_covering_breaches
-- Workflow ids whose latest alert is resolved and already covered the given breach hour:
-- a breach of such an hour is a re-run of old data, not a new alert.
SELECT DISTINCT ON (a.workflow_id) a.workflow_id, a.state, a.last_breach_hour
FROM alert_history a
WHERE a.workflow_id = ANY(%(workflow_ids)s)
ORDER BY a.workflow_id, a.breach_hour DESC

-- name: list_alerts
SELECT a.alert_id, a.org_id, a.site_id, a.compressor_id, a.rule_id, a.metric, a.value,
       a.threshold, a.severity, a.state, a.condition_state, a.ack_state, a.opened_at,
       a.escalated_at, a.acknowledged_by, a.resolved_at,
       (SELECT count(*) FROM alert_events e
        WHERE e.alert_id = a.alert_id AND e.event_type = 'delivery_failed') AS delivery_failures
FROM alert_history a
WHERE (%(state)s::text IS NULL AND a.state <> 'resolved' OR a.state = %(state)s::text
       OR %(state)s::text = 'all')
  AND (%(severity)s::text IS NULL OR a.severity = %(severity)s::text)
ORDER BY a.opened_at DESC, a.alert_id
LIMIT %(limit)s

-- name: alert_events_of
SELECT occurred_at, event_type, actor, details, event_key
FROM alert_events
WHERE alert_id = %(alert_id)s
ORDER BY occurred_at, event_id

-- name: notifications_of
SELECT attempted_at, step, contact_id, channel, attempt, status, error
FROM notifications
WHERE alert_id = %(alert_id)s
ORDER BY attempted_at, notification_id

-- name: delivery_failures_of
SELECT occurred_at, details
FROM alert_events
WHERE alert_id = %(alert_id)s AND event_type = 'delivery_failed'
ORDER BY occurred_at, event_id

-- name: open_alerts
SELECT alert_id, workflow_id, opened_at
FROM alert_history
WHERE state <> 'resolved'
ORDER BY alert_id

-- name: alert_exists
SELECT 1 FROM alert_history WHERE alert_id = %(alert_id)s

-- name: lock_alert
SELECT seq, state FROM alert_history WHERE alert_id = %(alert_id)s FOR UPDATE
