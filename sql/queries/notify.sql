-- Named queries of notifications, contacts, acknowledgement links and the demo inbox.
-- Tenant queries run inside altaviz.core.db.tenant(), so row-level security limits them to one
-- organization; none of them needs an org_id filter of its own.

-- name: org_exists
SELECT org_id FROM organizations WHERE org_id = current_org()

-- name: site_ids
SELECT site_id FROM sites

-- name: upsert_contact
INSERT INTO contacts (org_id, contact_id, name, role, site_ids, apprise_urls, active)
VALUES (%(org_id)s, %(contact_id)s, %(name)s, %(role)s, %(site_ids)s, %(apprise_urls)s,
        %(active)s)
ON CONFLICT (org_id, contact_id) DO UPDATE
SET name = EXCLUDED.name, role = EXCLUDED.role, site_ids = EXCLUDED.site_ids,
    apprise_urls = EXCLUDED.apprise_urls, active = EXCLUDED.active
WHERE (contacts.name, contacts.role, contacts.site_ids, contacts.apprise_urls, contacts.active)
      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.role, EXCLUDED.site_ids, EXCLUDED.apprise_urls,
                        EXCLUDED.active)

-- name: deactivate_missing_contacts
UPDATE contacts SET active = false
WHERE active AND NOT (contact_id = ANY (%(keep)s::text[]))

-- name: list_contacts
SELECT org_id, contact_id, name, role, site_ids, apprise_urls, active
FROM contacts ORDER BY role DESC, contact_id

-- name: recipients_by_role
-- Active contacts of the given roles covering the site (an empty site list covers every site).
SELECT contact_id, name, role, apprise_urls
FROM contacts
WHERE active AND role = ANY (%(roles)s::text[])
  AND (cardinality(site_ids) = 0 OR %(site_id)s = ANY (site_ids))
ORDER BY role DESC, contact_id

-- name: contacts_for_site
-- Every active contact covering the site, of any role: a step's audience and the levels of its
-- escalation chain.
SELECT contact_id, name, role, apprise_urls
FROM contacts
WHERE active AND (cardinality(site_ids) = 0 OR %(site_id)s = ANY (site_ids))
ORDER BY role DESC, contact_id

-- name: contact_for_delivery
SELECT contact_id, name, role, active, apprise_urls FROM contacts
WHERE contact_id = %(contact_id)s

-- name: recipients_notified
-- Active contacts who were successfully notified about the alert at an earlier step.
SELECT c.contact_id, c.name, c.role, c.apprise_urls
FROM contacts c
WHERE c.active AND EXISTS (
    SELECT 1 FROM notifications n
    WHERE n.alert_id = %(alert_id)s AND n.contact_id = c.contact_id AND n.status = 'sent'
      AND n.step <> %(step)s)
ORDER BY c.role DESC, c.contact_id

-- name: compressor_context
SELECT s.site_id, s.name AS site_name, s.basin, c.model, c.driver
FROM compressors c JOIN sites s ON s.org_id = c.org_id AND s.site_id = c.site_id
WHERE c.compressor_id = %(compressor_id)s

-- name: rule_definition
-- The rule as loaded: the alert's own rule-set version if known, else the organization's
-- newest override, else the newest default set; and that set's id.
SELECT r.definition, r.rule_set_id
FROM alert_rules r JOIN alert_rule_sets s ON s.rule_set_id = r.rule_set_id
WHERE r.rule_id = %(rule_id)s
  AND (%(rule_set_id)s::bigint IS NULL OR s.rule_set_id = %(rule_set_id)s::bigint)
ORDER BY (s.org_id IS NULL), s.version DESC
LIMIT 1

-- name: metric_thresholds
-- The threshold rules of a rule set on one metric (a stuck notice names the alarm level its
-- frozen reading sits beyond).
SELECT r.definition
FROM alert_rules r
WHERE r.rule_set_id = %(rule_set_id)s AND r.definition->>'kind' = 'threshold'
  AND r.definition->>'metric' = %(metric)s
ORDER BY r.rule_id

-- name: recent_trend
SELECT hour, mean, max
FROM sensor_readings_agg
WHERE compressor_id = %(compressor_id)s AND metric = %(metric)s
  AND hour <= %(until)s AND hour > %(until)s - make_interval(hours => %(hours)s)
ORDER BY hour

-- name: delivery_lock
-- Serializes deliveries of one (alert, step, contact, channel) across concurrent attempts of
-- the activity; released when the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))

-- name: delivery_status
SELECT count(*) AS attempts, coalesce(bool_or(status = 'sent'), false) AS sent
FROM notifications
WHERE alert_id = %(alert_id)s AND step = %(step)s AND contact_id = %(contact_id)s
  AND channel = %(channel)s

-- name: record_attempt
INSERT INTO notifications (org_id, alert_id, step, contact_id, channel, attempt, status, error,
                           title)
VALUES (current_org(), %(alert_id)s, %(step)s, %(contact_id)s, %(channel)s, %(attempt)s,
        %(status)s, %(error)s, %(title)s)
ON CONFLICT (alert_id, step, contact_id, channel) WHERE status = 'sent' DO NOTHING

-- name: alert_for_link
SELECT a.alert_id, a.org_id, a.compressor_id, a.rule_id, a.metric, a.value, a.threshold,
       a.severity, a.state, a.condition_state, a.ack_state, a.breach_hour, a.opened_at,
       a.escalated_at, a.acknowledged_at, a.acknowledged_by, a.ack_channel, a.cleared_at,
       a.resolved_at, a.resolved_by, a.resolve_reason, a.workflow_id, a.run_id, a.run_ids,
       s.site_id, s.name AS site_name, s.basin, c.model
FROM alert_history a
JOIN compressors c ON c.org_id = a.org_id AND c.compressor_id = a.compressor_id
JOIN sites s ON s.org_id = c.org_id AND s.site_id = c.site_id
WHERE a.alert_id = %(alert_id)s

-- name: contact_by_id
SELECT contact_id, name, role, active FROM contacts WHERE contact_id = %(contact_id)s

-- name: link_token_use
SELECT outcome, used_at, completed_at, detail FROM link_tokens_used WHERE token_id = %(token_id)s

-- name: claim_link_token
-- Returns a row only to the one request that may use the token now: the first, or a retry
-- after the workflow refused it (released), or after a claim abandoned by a crashed server.
INSERT INTO link_tokens_used (token_id, org_id, alert_id, contact_id, action, outcome)
VALUES (%(token_id)s, current_org(), %(alert_id)s, %(contact_id)s, %(action)s, 'claimed')
ON CONFLICT (token_id) DO UPDATE
SET outcome = 'claimed', used_at = now(), completed_at = NULL, detail = NULL
WHERE link_tokens_used.outcome = 'released'
   OR (link_tokens_used.outcome = 'claimed' AND link_tokens_used.used_at < now() - interval '5 minutes')
RETURNING token_id

-- name: finish_link_token
UPDATE link_tokens_used SET outcome = %(outcome)s, completed_at = now(), detail = %(detail)s
WHERE token_id = %(token_id)s

-- name: alert_events_for_alert
SELECT event_type, occurred_at, actor, details FROM alert_events
WHERE alert_id = %(alert_id)s ORDER BY occurred_at, event_id

-- name: notifications_for_alert
SELECT n.step, n.contact_id, c.name, c.role, n.channel, n.attempt, n.status, n.error, n.title,
       n.attempted_at
FROM notifications n LEFT JOIN contacts c ON c.org_id = n.org_id AND c.contact_id = n.contact_id
WHERE n.alert_id = %(alert_id)s ORDER BY n.attempted_at, n.notification_id

-- name: link_uses_for_alert
SELECT u.contact_id, c.name, u.action, u.outcome, u.used_at, u.completed_at, u.detail
FROM link_tokens_used u LEFT JOIN contacts c ON c.org_id = u.org_id AND c.contact_id = u.contact_id
WHERE u.alert_id = %(alert_id)s ORDER BY u.used_at

-- name: inbox_insert
INSERT INTO demo_inbox (mailbox, title, body, notify_type)
VALUES (%(mailbox)s, %(title)s, %(body)s, %(notify_type)s)
RETURNING message_id

-- name: inbox_list
SELECT message_id, mailbox, title, body, notify_type, received_at
FROM demo_inbox
WHERE %(mailbox)s::text IS NULL OR mailbox = %(mailbox)s::text
ORDER BY received_at DESC, message_id DESC
LIMIT %(limit)s
