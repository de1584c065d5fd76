-- 190: one-time sign-in links for the supervisor console.
--
-- A console user may name the contact whose notification channels they read
-- (console_users.contact_id): asking for a sign-in link then sends a single-use link, valid
-- for 15 minutes, through that contact's Apprise URLs, the same path alerts take. The link
-- carries a signed id of a row of console_sign_in_links; opening it marks the row used (once:
-- used_at is set by a conditional UPDATE) and starts a session.
--
-- Asking for a link must find the user before the organization is known:
-- console_link_lookup() is, like console_sign_in_lookup(), a SECURITY DEFINER function
-- returning only the matching active user's organization and login, and only when they have
-- an active contact to send to. It never returns the contact's URLs (those are read inside the
-- organization's tenant transaction, under row-level security).

ALTER TABLE console_users ADD COLUMN contact_id text;
ALTER TABLE console_users ADD CONSTRAINT console_users_contact_fk
    FOREIGN KEY (org_id, contact_id) REFERENCES contacts (org_id, contact_id);

CREATE TABLE console_sign_in_links (
    link_id     text PRIMARY KEY CHECK (link_id ~ '^[A-Za-z0-9_-]{22}$'),
    org_id      text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    login       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, login) REFERENCES console_users (org_id, login) ON DELETE CASCADE
);
CREATE INDEX console_sign_in_links_expires_idx ON console_sign_in_links (expires_at);

ALTER TABLE console_sign_in_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_sign_in_links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_sign_in_links TO altaviz_app
    USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
GRANT SELECT, INSERT, UPDATE, DELETE ON console_sign_in_links TO altaviz_app;

CREATE FUNCTION console_link_lookup(user_login text)
RETURNS TABLE (org_id text, login text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT u.org_id, u.login
    FROM public.console_users u
    JOIN public.contacts c ON c.org_id = u.org_id AND c.contact_id = u.contact_id AND c.active
    WHERE u.login = user_login AND u.active
$$;
REVOKE EXECUTE ON FUNCTION console_link_lookup(text) FROM PUBLIC;

DO $$
DECLARE
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
    runtime_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'runtime');
BEGIN
    EXECUTE format('CREATE POLICY owner_access ON console_sign_in_links TO %I '
                   'USING ((SELECT current_org()) IS NULL OR org_id = (SELECT current_org())) '
                   'WITH CHECK ((SELECT current_org()) IS NULL '
                   'OR org_id = (SELECT current_org()))', owner_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION console_link_lookup(text) TO %I', runtime_role);
END $$;
