-- 100: least privilege: a schema owner, a runtime login, sealed tenants, FORCE RLS.
--
-- Until now every process logged in as the role that owned the schema (the superuser in
-- embedded mode), and a tenant transaction could leave its organization with a plain
-- set_config('altaviz.org_id', ...) or RESET ROLE. After this migration:
--
-- * <database>_owner (LOGIN) owns every object: migrations, fleet loading and the ETL.
--   <database>_runtime (LOGIN) is the worker's, the web server's and the CLI's login: no
--   attribute beyond LOGIN, NOINHERIT, member of the tenant role altaviz_app only, so outside
--   a tenant transaction (or after RESET ROLE) it can read no table at all, and it can never
--   become the owner. Names carry the database's name because roles are cluster-wide: two
--   Altaviz databases on one server never share a login. Roles that already exist are checked,
--   and the migration fails, naming the role and the problem, if one has a dangerous
--   attribute (SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB, REPLICATION) or a membership
--   beyond altaviz_app.
-- * A tenant is entered with enter_tenant(org), which also stores a seal: an HMAC-style
--   digest of the organization and the transaction's start under a key only the owner can
--   read. current_org() returns the organization only while the seal matches, so a forged
--   set_config('altaviz.org_id', ...) sees nothing, and enter_tenant refuses a second
--   organization in the same transaction.
-- * Every table under row-level security also gets FORCE ROW LEVEL SECURITY; the owner keeps
--   a policy that lets it work across organizations only outside a tenant transaction, so a
--   function running as the owner inside one stays confined to that organization.
-- * Policies compare with (SELECT current_org()): evaluated once per statement (an InitPlan),
--   not once per row, now that current_org() checks the seal.
-- * The tenant role no longer reads etl_runs: its errors span every organization.

CREATE TABLE altaviz_roles (
    kind     text PRIMARY KEY CHECK (kind IN ('owner', 'runtime')),
    rolname  name NOT NULL UNIQUE
);

-- The problem with an existing role, or NULL: the attributes and memberships a role of this
-- kind must not have (roles are cluster-wide: someone may have created it with more).
CREATE FUNCTION altaviz_role_problem(role_name text, allowed text[], may_login boolean)
RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    r pg_roles%ROWTYPE;
    bad text[] := '{}';
    extra text;
BEGIN
    SELECT * INTO r FROM pg_roles WHERE rolname = role_name;
    IF NOT FOUND THEN
        RETURN format('role %I does not exist', role_name);
    END IF;
    IF r.rolsuper THEN bad := bad || 'SUPERUSER'::text; END IF;
    IF r.rolbypassrls THEN bad := bad || 'BYPASSRLS'::text; END IF;
    IF r.rolcreaterole THEN bad := bad || 'CREATEROLE'::text; END IF;
    IF r.rolcreatedb THEN bad := bad || 'CREATEDB'::text; END IF;
    IF r.rolreplication THEN bad := bad || 'REPLICATION'::text; END IF;
    IF r.rolcanlogin AND NOT may_login THEN bad := bad || 'LOGIN'::text; END IF;
    IF cardinality(bad) > 0 THEN
        RETURN format('role %I has %s; a role of Altaviz must not (ALTER ROLE %I NO%s)',
                      role_name, array_to_string(bad, ', '), role_name,
                      array_to_string(bad, ' NO'));
    END IF;
    SELECT string_agg(g.rolname, ', ' ORDER BY g.rolname) INTO extra
    FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
    WHERE m.member = r.oid AND NOT (g.rolname = ANY (allowed));
    IF extra IS NOT NULL THEN
        RETURN format('role %I is a member of %s; it may only be a member of %s (REVOKE %s '
                      'FROM %I)', role_name, extra,
                      coalesce(nullif(array_to_string(allowed, ', '), ''), 'no role'),
                      extra, role_name);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    db text := current_database();
    owner_role text := db || '_owner';
    runtime_role text := db || '_runtime';
    me pg_roles%ROWTYPE;
    role_name text;
    problem text;
BEGIN
    IF length(db) > 55 THEN
        RAISE EXCEPTION 'database name % is longer than 55 characters: its roles %_owner and '
                        '%_runtime would not fit PostgreSQL''s 63', db, db, db;
    END IF;
    SELECT * INTO me FROM pg_roles WHERE rolname = current_user;
    problem := altaviz_role_problem('altaviz_app', '{}', false);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOREACH role_name IN ARRAY ARRAY[owner_role, runtime_role] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            IF NOT (me.rolsuper OR me.rolcreaterole) THEN
                RAISE EXCEPTION 'role % does not exist and % may not create roles', role_name,
                                current_user
                    USING HINT = format('create it first: CREATE ROLE %I LOGIN PASSWORD ... '
                                        '(docs/OPERATIONS.md, "Database roles")', role_name);
            END IF;
            EXECUTE format('CREATE ROLE %I LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS '
                           'NOCREATEDB NOCREATEROLE NOREPLICATION', role_name);
        END IF;
        problem := altaviz_role_problem(role_name, ARRAY['altaviz_app'], true);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION '%', problem USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    INSERT INTO altaviz_roles VALUES ('owner', owner_role), ('runtime', runtime_role);

    EXECUTE format('GRANT altaviz_app TO %I, %I', owner_role, runtime_role);
    IF current_user <> owner_role THEN
        -- the migrating role hands every object over and keeps acting as the owner
        EXECUTE format('GRANT %I TO %I', owner_role, current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA public TO %I', owner_role);
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', db, owner_role);
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', db, runtime_role);
END $$;

-- The key of tenant seals: readable by the owner alone (no grant, no RLS needed).
CREATE TABLE altaviz_tenant_key (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    key  bytea NOT NULL CHECK (length(key) >= 32)
);
INSERT INTO altaviz_tenant_key (key)
VALUES (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                       || gen_random_uuid()::text, '-', ''), 'hex'));

-- sha256(key || sha256(key || message)): the outer hash closes SHA-256's length extension.
-- The message binds the organization to the transaction's start (now() is the same in
-- parallel workers); the epoch's text does not depend on TimeZone or DateStyle.
CREATE FUNCTION altaviz_tenant_seal(org text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER AS $$
    SELECT pg_catalog.encode(pg_catalog.sha256(k.key OPERATOR(pg_catalog.||) pg_catalog.sha256(
               k.key OPERATOR(pg_catalog.||) pg_catalog.convert_to(
                   org OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||)
                   pg_catalog.extract('epoch', pg_catalog.now())::text, 'UTF8'))), 'hex')
    FROM public.altaviz_tenant_key k
$$;
REVOKE EXECUTE ON FUNCTION altaviz_tenant_seal(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION current_org() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER AS $$
    SELECT s.org
    FROM (SELECT NULLIF(pg_catalog.current_setting('altaviz.org_id', true), '')
                 AS org) s
    WHERE pg_catalog.current_setting('altaviz.tenant_seal', true)
          OPERATOR(pg_catalog.=) public.altaviz_tenant_seal(s.org)
$$;

CREATE FUNCTION enter_tenant(org text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    entered text := public.current_org();
BEGIN
    IF org IS NULL OR org !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid organization id %', quote_nullable(org)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF entered IS NOT NULL AND entered <> org THEN
        RAISE EXCEPTION 'this transaction works for organization %; it cannot switch to %',
                        entered, org USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('altaviz.org_id', org, true);
    PERFORM set_config('altaviz.tenant_seal', public.altaviz_tenant_seal(org), true);
END $$;
REVOKE EXECUTE ON FUNCTION enter_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION enter_tenant(text) TO altaviz_app;

-- Organization ids, the one cross-tenant read the runtime needs (to run each one's rules).
CREATE FUNCTION organization_ids() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT org_id FROM public.organizations ORDER BY org_id
$$;
REVOKE EXECUTE ON FUNCTION organization_ids() FROM PUBLIC;

REVOKE SELECT ON etl_runs FROM altaviz_app;

-- Policies: (SELECT current_org()) once per statement.
DO $$
DECLARE
    p record;
    clause text;
BEGIN
    FOR p IN SELECT tablename, policyname, qual, with_check FROM pg_policies
             WHERE schemaname = 'public'
               AND (qual LIKE '%current_org()%' OR with_check LIKE '%current_org()%')
    LOOP
        clause := '';
        IF p.qual IS NOT NULL THEN
            clause := format(' USING (%s)', replace(p.qual, 'current_org()',
                                                     '(SELECT current_org())'));
        END IF;
        IF p.with_check IS NOT NULL THEN
            clause := clause || format(' WITH CHECK (%s)', replace(p.with_check, 'current_org()',
                                                                   '(SELECT current_org())'));
        END IF;
        EXECUTE format('ALTER POLICY %I ON %I', p.policyname, p.tablename) || clause;
    END LOOP;
END $$;

-- FORCE on every table under row-level security; the owner's own policy; ownership.
DO $$
DECLARE
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
    runtime_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'runtime');
    t record;
    obj record;
BEGIN
    FOR t IN SELECT c.relname,
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                            AND a.attname = 'org_id' AND NOT a.attisdropped) AS has_org
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relrowsecurity
               AND NOT c.relispartition
    LOOP
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t.relname);
        EXECUTE format('CREATE POLICY owner_access ON %I TO %I USING (%s) WITH CHECK (%3$s)',
                       t.relname, owner_role,
                       CASE WHEN t.has_org THEN '(SELECT current_org()) IS NULL '
                                                'OR org_id = (SELECT current_org())'
                            ELSE 'true' END);
    END LOOP;
    -- the demo receiver's mailbox (not tenant data) is the web server's
    EXECUTE format('CREATE POLICY runtime_inbox ON demo_inbox TO %I USING (true) '
                   'WITH CHECK (true)', runtime_role);
    EXECUTE format('GRANT SELECT, INSERT ON demo_inbox TO %I', runtime_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE demo_inbox_message_id_seq TO %I', runtime_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION organization_ids() TO %I', runtime_role);

    IF current_user = owner_role THEN
        RETURN;
    END IF;
    FOR obj IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user
                 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                 AND NOT (c.relkind = 'S' AND EXISTS (
                     SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                     AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        IF obj.relkind = 'S' THEN
            EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', obj.rel, owner_role);
        ELSE
            EXECUTE format('ALTER TABLE %s OWNER TO %I', obj.rel, owner_role);
        END IF;
    END LOOP;
    FOR obj IN SELECT p.oid::regprocedure AS fn FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) = current_user
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', obj.fn, owner_role);
    END LOOP;
END $$;
