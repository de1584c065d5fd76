-- Short acknowledgement links (altaviz.core.links); run inside a tenant transaction.

-- name: insert_short_link
INSERT INTO short_links (short_id, org_id, alert_id, contact_id, action, expires_at, key_id)
VALUES (%(short_id)s, %(org_id)s, %(alert_id)s, %(contact_id)s, %(action)s,
        %(expires_at)s, %(key_id)s)

-- name: short_link
SELECT short_id, org_id, alert_id, contact_id, action, expires_at, key_id
FROM short_links WHERE short_id = %(short_id)s

-- name: prune_short_links
DELETE FROM short_links WHERE expires_at < %(before)s
