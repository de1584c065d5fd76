-- 170: short acknowledgement links.
--
-- A signed token names the organization, alert, recipient, action and expiry in itself, which
-- makes a link of about 200 characters: too long for an SMS and unreadable in a message. A
-- short link is /a/<org_id>/<code>: the code is a random id (12 characters) followed by a
-- signature (12 characters) of that id and the claims stored here under it. The server looks
-- the claims up by id and checks the signature against them, so a row altered in the table
-- no longer verifies, and the table alone cannot mint a link (it holds no signature). The
-- claims carry their own expiry; single use is link_tokens_used's, as for long links.

CREATE TABLE short_links (
    short_id    text PRIMARY KEY CHECK (short_id ~ '^[A-Za-z0-9_-]{12}$'),
    org_id      text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    alert_id    text NOT NULL CHECK (length(alert_id) BETWEEN 1 AND 500),
    contact_id  text NOT NULL CHECK (length(contact_id) BETWEEN 1 AND 200),
    action      text NOT NULL CHECK (action IN ('ack', 'view')),
    expires_at  timestamptz NOT NULL,
    key_id      text NOT NULL CHECK (length(key_id) BETWEEN 1 AND 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX short_links_expires_idx ON short_links (expires_at);

ALTER TABLE short_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE short_links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON short_links TO altaviz_app
    USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
-- No UPDATE: a short link never changes; expired rows may be deleted.
GRANT SELECT, INSERT, DELETE ON short_links TO altaviz_app;

DO $$
DECLARE
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
BEGIN
    EXECUTE format('CREATE POLICY owner_access ON short_links TO %I USING ((SELECT '
                   'current_org()) IS NULL OR org_id = (SELECT current_org())) WITH CHECK '
                   '((SELECT current_org()) IS NULL OR org_id = (SELECT current_org()))',
                   owner_role);
END $$;
