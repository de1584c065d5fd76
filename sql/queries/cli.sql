-- Named queries of the command line (altaviz/app/commands); each runs inside
-- altaviz.core.db.tenant().

-- name: alerts_table
-- What `alerts list` shows: the breach hour (when it happened), not when the row was written,
-- and the rule's kind (a no-data rule's value is hours without data).
SELECT a.alert_id, a.compressor_id, a.metric, a.value, a.threshold, a.severity, a.state,
       coalesce(a.last_breach_hour, a.breach_hour) AS breach_hour, a.acknowledged_by,
       (SELECT count(*) FROM alert_events e
        WHERE e.alert_id = a.alert_id AND e.event_type = 'delivery_failed') AS delivery_failures,
       (SELECT r.kind FROM alert_rules r JOIN alert_rule_sets s ON s.rule_set_id = r.rule_set_id
        WHERE r.rule_id = a.rule_id
          AND (a.rule_set_id IS NULL OR s.rule_set_id = a.rule_set_id)
        ORDER BY (s.org_id IS NULL), s.version DESC LIMIT 1) AS rule_kind
FROM alert_history a
WHERE (%(state)s::text IS NULL AND a.state <> 'resolved' OR a.state = %(state)s::text
       OR %(state)s::text = 'all')
  AND (%(severity)s::text IS NULL OR a.severity = %(severity)s::text)
ORDER BY coalesce(a.last_breach_hour, a.breach_hour) DESC, a.alert_id
LIMIT %(limit)s

-- name: rule_kind_of_alert
SELECT r.kind FROM alert_history a
JOIN alert_rules r ON r.rule_id = a.rule_id
JOIN alert_rule_sets s ON s.rule_set_id = r.rule_set_id
WHERE a.alert_id = %(alert_id)s AND (a.rule_set_id IS NULL OR s.rule_set_id = a.rule_set_id)
ORDER BY (s.org_id IS NULL), s.version DESC
LIMIT 1
