-- Named queries of the supervisor console. Every query but sign_in_lookup runs inside
-- altaviz.core.db.tenant() for the signed-in person's organization: row-level security limits
-- it to that organization, so none needs an org_id filter of its own.

-- name: sign_in_lookup
-- The one read before the organization is known (migration 180's SECURITY DEFINER function).
SELECT org_id, login, name, password_hash, session_epoch FROM console_sign_in_lookup(%(login)s)

-- name: session_user
SELECT org_id, login, name, session_epoch FROM console_users
WHERE login = %(login)s AND active

-- name: record_sign_in
UPDATE console_users SET last_sign_in_at = now(), updated_at = now() WHERE login = %(login)s

-- name: rehash_password
UPDATE console_users SET password_hash = %(password_hash)s, updated_at = now()
WHERE login = %(login)s

-- name: end_sessions
-- Signing out ends every session of the person: cookies carry the epoch they were issued in.
UPDATE console_users SET session_epoch = session_epoch + 1, updated_at = now()
WHERE login = %(login)s

-- name: upsert_user
INSERT INTO console_users (org_id, login, name, password_hash)
VALUES (current_org(), %(login)s, %(name)s, %(password_hash)s)
ON CONFLICT (org_id, login) DO UPDATE
SET name = EXCLUDED.name, password_hash = EXCLUDED.password_hash, active = true,
    session_epoch = console_users.session_epoch + 1, updated_at = now()
RETURNING (xmax = 0) AS created

-- name: deactivate_user
UPDATE console_users SET active = false, session_epoch = session_epoch + 1, updated_at = now()
WHERE login = %(login)s AND active
RETURNING login

-- name: list_users
SELECT login, name, active, last_sign_in_at, created_at FROM console_users ORDER BY login

-- name: organization_name
SELECT name FROM organizations WHERE org_id = current_org()

-- name: alerts
-- The alert list: any filter left NULL does not filter; state 'active' is every state but
-- resolved. Critical first, then the newest breach.
SELECT a.alert_id, a.compressor_id, a.rule_id, a.metric, a.value, a.threshold, a.severity,
       a.state, a.ack_state, a.condition_state, a.breach_hour, a.opened_at, a.acknowledged_at,
       coalesce(p.name, a.acknowledged_by) AS acknowledged_by, a.resolved_at, c.site_id,
       s.name AS site_name, k.rule_kind
FROM alert_history a
JOIN compressors c ON c.org_id = a.org_id AND c.compressor_id = a.compressor_id
JOIN sites s ON s.org_id = c.org_id AND s.site_id = c.site_id
LEFT JOIN contacts p ON p.org_id = a.org_id AND p.contact_id = a.acknowledged_by
LEFT JOIN LATERAL (
    SELECT r.kind AS rule_kind
    FROM alert_rules r JOIN alert_rule_sets rs ON rs.rule_set_id = r.rule_set_id
    WHERE r.rule_id = a.rule_id AND (a.rule_set_id IS NULL OR r.rule_set_id = a.rule_set_id)
    ORDER BY (rs.org_id IS NULL), rs.version DESC
    LIMIT 1) k ON true
WHERE (%(severity)s::text IS NULL OR a.severity = %(severity)s::text)
  AND (%(state)s::text IS NULL OR a.state = %(state)s::text
       OR (%(state)s::text = 'active' AND a.state <> 'resolved'))
  AND (%(site)s::text IS NULL OR c.site_id = %(site)s::text)
  AND (%(compressor)s::text IS NULL OR a.compressor_id = %(compressor)s::text)
  AND (%(rule)s::text IS NULL OR a.rule_id = %(rule)s::text)
  AND (%(since)s::timestamptz IS NULL OR a.breach_hour >= %(since)s::timestamptz)
ORDER BY (a.state = 'resolved'), (a.severity <> 'critical'), a.breach_hour DESC, a.alert_id
LIMIT %(limit)s

-- name: alert_counts
-- Counts by state and severity under every filter except state and severity themselves.
SELECT a.state, a.severity, count(*) AS n
FROM alert_history a
JOIN compressors c ON c.org_id = a.org_id AND c.compressor_id = a.compressor_id
WHERE (%(site)s::text IS NULL OR c.site_id = %(site)s::text)
  AND (%(compressor)s::text IS NULL OR a.compressor_id = %(compressor)s::text)
  AND (%(rule)s::text IS NULL OR a.rule_id = %(rule)s::text)
  AND (%(since)s::timestamptz IS NULL OR a.breach_hour >= %(since)s::timestamptz)
GROUP BY a.state, a.severity

-- name: filter_choices
SELECT 'site' AS kind, site_id AS value, name AS label FROM sites
UNION ALL
SELECT 'compressor', compressor_id, compressor_id FROM compressors
UNION ALL
SELECT DISTINCT 'rule', rule_id, rule_id FROM alert_history
ORDER BY 1, 2

-- name: rule_limits
-- The alert's rule as loaded (its own rule-set version if known, else the newest).
SELECT r.definition
FROM alert_rules r JOIN alert_rule_sets s ON s.rule_set_id = r.rule_set_id
WHERE r.rule_id = %(rule_id)s
  AND (%(rule_set_id)s::bigint IS NULL OR s.rule_set_id = %(rule_set_id)s::bigint)
ORDER BY (s.org_id IS NULL), s.version DESC
LIMIT 1

-- name: metric_rules
-- The newest definition of every rule on the given metrics (limits for compressor charts).
SELECT DISTINCT ON (r.rule_id) r.rule_id, r.metric, r.definition
FROM alert_rules r JOIN alert_rule_sets s ON s.rule_set_id = r.rule_set_id
WHERE r.metric = ANY (%(metrics)s::text[])
ORDER BY r.rule_id, (s.org_id IS NULL), s.version DESC

-- name: alert_rule_set
SELECT rule_set_id FROM alert_history WHERE alert_id = %(alert_id)s

-- name: hourly_means
-- Hourly means of one metric of one compressor in (start, end].
SELECT hour, mean FROM sensor_readings_agg
WHERE compressor_id = %(compressor_id)s AND metric = %(metric)s
  AND hour > %(start)s AND hour <= %(end)s
ORDER BY hour

-- name: latest_hour
SELECT max(hour) FROM agg_compressor_hours
WHERE compressor_id = %(compressor_id)s AND hour <= %(until)s

-- name: compressor
SELECT c.compressor_id, c.model, c.driver, c.rated_hp, c.rated_rpm, c.stages, c.site_id,
       s.name AS site_name, s.basin, w.last_reading_at
FROM compressors c
JOIN sites s ON s.org_id = c.org_id AND s.site_id = c.site_id
LEFT JOIN etl_watermarks w ON w.org_id = c.org_id AND w.compressor_id = c.compressor_id
WHERE c.compressor_id = %(compressor_id)s

-- name: compressor_quality
SELECT check_type, measured, threshold, passed, details, checked_at
FROM data_quality_summary WHERE compressor_id = %(compressor_id)s
ORDER BY check_type

-- name: quality_by_check
SELECT check_type, count(*) AS units, count(*) FILTER (WHERE passed) AS passed,
       max(checked_at) AS checked_at
FROM data_quality_summary GROUP BY check_type ORDER BY check_type

-- name: quality_failures
SELECT q.compressor_id, c.site_id, q.check_type, q.measured, q.threshold, q.details,
       q.checked_at
FROM data_quality_summary q
JOIN compressors c ON c.org_id = q.org_id AND c.compressor_id = q.compressor_id
WHERE NOT q.passed
ORDER BY q.compressor_id, q.check_type

-- name: contact_names
-- Display names of the people an alert's timeline mentions (acknowledged, resolved by).
SELECT contact_id, name FROM contacts WHERE contact_id = ANY (%(ids)s::text[])
