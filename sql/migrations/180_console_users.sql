-- 180: people who sign in to the supervisor console.
--
-- A console user belongs to one organization and signs in with a login (unique across the
-- database, so the sign-in form needs nothing else) and a password stored as an argon2id hash
-- (never the password). Every console page then reads inside that organization's tenant
-- transaction, so row-level security confines it like the worker and the link pages.
--
-- session_epoch is part of every session cookie: signing out (or deactivating the user)
-- bumps it, and cookies issued before stop working at once although they are still signed.
--
-- Sign-in must find the user before it knows the organization: console_sign_in_lookup() is
-- the one cross-tenant read, a SECURITY DEFINER function returning only the matching active
-- user's organization and hash, executable by the runtime login alone.

CREATE TABLE console_users (
    org_id          text NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    login           text NOT NULL CHECK (login ~ '^[a-z0-9][a-z0-9._@+-]{0,99}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash   text NOT NULL CHECK (password_hash LIKE '$argon2%'),
    active          boolean NOT NULL DEFAULT true,
    session_epoch   integer NOT NULL DEFAULT 0,
    last_sign_in_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, login)
);
CREATE UNIQUE INDEX console_users_login_idx ON console_users (login);

ALTER TABLE console_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE console_users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON console_users TO altaviz_app
    USING (org_id = (SELECT current_org())) WITH CHECK (org_id = (SELECT current_org()));
GRANT SELECT, INSERT, UPDATE ON console_users TO altaviz_app;

CREATE FUNCTION console_sign_in_lookup(user_login text)
RETURNS TABLE (org_id text, login text, name text, password_hash text, session_epoch integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT u.org_id, u.login, u.name, u.password_hash, u.session_epoch
    FROM public.console_users u
    WHERE u.login = user_login AND u.active
$$;
REVOKE EXECUTE ON FUNCTION console_sign_in_lookup(text) FROM PUBLIC;

DO $$
DECLARE
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
    runtime_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'runtime');
BEGIN
    EXECUTE format('CREATE POLICY owner_access ON console_users TO %I '
                   'USING ((SELECT current_org()) IS NULL OR org_id = (SELECT current_org())) '
                   'WITH CHECK ((SELECT current_org()) IS NULL '
                   'OR org_id = (SELECT current_org()))', owner_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION console_sign_in_lookup(text) TO %I',
                   runtime_role);
END $$;
