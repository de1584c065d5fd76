-- Named queries of silences, maintenance windows and held-back breaches
-- (activities/holds.py, altaviz/app/commands/silence.py, maintenance.py). Every one runs inside
-- altaviz.core.db.tenant(), so row-level security confines it to one organization.

-- name: insert_silence
INSERT INTO silences (org_id, compressor_ids, site_ids, rule_ids, severities, starts_at,
                      ends_at, created_by, comment)
VALUES (%(org_id)s, %(compressor_ids)s, %(site_ids)s, %(rule_ids)s, %(severities)s,
        %(starts_at)s, %(ends_at)s, %(created_by)s, %(comment)s)
RETURNING silence_id

-- name: list_silences
-- Silences not yet over at %(now)s, or every one with %(all)s.
SELECT silence_id, org_id, compressor_ids, site_ids, rule_ids, severities, starts_at, ends_at,
       created_by, comment, expired_by
FROM silences
WHERE %(all)s OR ends_at > %(now)s
ORDER BY starts_at, silence_id

-- name: silences_for_unit
-- The silences that may hold back an alert of this compressor from %(at)s on.
SELECT silence_id, org_id, compressor_ids, site_ids, rule_ids, severities, starts_at, ends_at,
       created_by, comment, expired_by
FROM silences
WHERE ends_at > %(at)s
  AND (compressor_ids IS NULL OR %(compressor_id)s = ANY (compressor_ids))
ORDER BY starts_at, silence_id

-- name: expire_silence
-- Ends a silence now (never before its start: a future silence expired is simply over).
UPDATE silences
SET ends_at = GREATEST(starts_at + interval '1 microsecond', %(now)s),
    expired_by = %(by)s, expired_at = %(now)s
WHERE silence_id = %(silence_id)s AND ends_at > %(now)s
RETURNING silence_id, ends_at

-- name: silence_exists
SELECT ends_at FROM silences WHERE silence_id = %(silence_id)s

-- name: insert_window
INSERT INTO maintenance_windows (org_id, compressor_id, site_id, starts_at, ends_at, reason,
                                 created_by, recurrence, timezone)
VALUES (%(org_id)s, %(compressor_id)s, %(site_id)s, %(starts_at)s, %(ends_at)s, %(reason)s,
        %(created_by)s, %(recurrence)s, %(timezone)s)
RETURNING window_id

-- name: list_windows
SELECT window_id, org_id, compressor_id, site_id, starts_at, ends_at, reason, created_by,
       recurrence
FROM maintenance_windows
WHERE %(all)s OR ends_at > %(now)s
ORDER BY starts_at, window_id

-- name: windows_between
-- Windows whose bounds overlap [%(start)s, %(end)s).
SELECT window_id, org_id, compressor_id, site_id, starts_at, ends_at, reason, created_by,
       recurrence
FROM maintenance_windows
WHERE starts_at < %(end)s AND ends_at > %(start)s
ORDER BY starts_at, window_id

-- name: delete_window
DELETE FROM maintenance_windows WHERE window_id = %(window_id)s RETURNING window_id

-- name: insert_held_breach
INSERT INTO held_breaches (org_id, compressor_id, rule_id, hour, held_by, detail)
VALUES (%(org_id)s, %(compressor_id)s, %(rule_id)s, %(hour)s, %(held_by)s, %(detail)s)
ON CONFLICT DO NOTHING

-- name: held_counts
SELECT held_by, count(*) FROM held_breaches GROUP BY held_by ORDER BY held_by

-- name: silenced_notification_count
-- Notification steps a silence or window held back (alert_events of type notify_held).
SELECT details ->> 'held_by' AS held_by, count(*)
FROM alert_events WHERE event_type = 'notify_held'
GROUP BY 1 ORDER BY 1

-- name: open_stops
-- Compressors with an open, still active alert of an inhibiting rule (a unit still stopped:
-- missing data never clears it), and the hour the stop began.
SELECT compressor_id, min(breach_hour)
FROM alert_history
WHERE rule_id = ANY (%(rule_ids)s) AND state <> 'resolved' AND condition_state = 'active'
GROUP BY compressor_id

-- name: open_alert_workflows
-- The organization's alerts not yet resolved, with the labels a silence matches, so that a
-- silence added or expired can tell the workflows it concerns at once.
SELECT DISTINCT a.workflow_id, a.compressor_id, c.site_id, a.rule_id, a.severity
FROM alert_history a
JOIN compressors c ON c.org_id = a.org_id AND c.compressor_id = a.compressor_id
WHERE a.state <> 'resolved'
ORDER BY a.workflow_id
