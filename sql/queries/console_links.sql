-- Named queries of the console's one-time sign-in links (altaviz/app/web/sign_in_link.py).
-- Every query but link_lookup runs inside altaviz.core.db.tenant() for the user's
-- organization.

-- name: link_lookup
-- The one read before the organization is known (migration 190's SECURITY DEFINER function).
SELECT org_id, login FROM console_link_lookup(%(login)s)

-- name: link_channels
-- The Apprise URLs of the contact the console user reads (row-level security: own org only).
SELECT c.apprise_urls, u.name
FROM console_users u
JOIN contacts c ON c.org_id = u.org_id AND c.contact_id = u.contact_id AND c.active
WHERE u.login = %(login)s AND u.active

-- name: insert_link
INSERT INTO console_sign_in_links (link_id, org_id, login, expires_at)
VALUES (%(link_id)s, current_org(), %(login)s, %(expires_at)s)

-- name: use_link
-- Marks the link used, once, if not expired; returns the session epoch to sign the cookie with.
UPDATE console_sign_in_links l SET used_at = now()
FROM console_users u
WHERE l.link_id = %(link_id)s AND l.used_at IS NULL AND l.expires_at > now()
  AND u.org_id = l.org_id AND u.login = l.login AND u.active
RETURNING l.login, u.session_epoch

-- name: forget_expired_links
DELETE FROM console_sign_in_links WHERE expires_at < now() - interval '1 day'

-- name: set_user_contact
UPDATE console_users SET contact_id = %(contact_id)s, updated_at = now()
WHERE login = %(login)s
RETURNING login
