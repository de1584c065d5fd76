-- 200: the ETL logs in as its own role, <database>_etl, instead of as the schema owner.
--
-- The ETL reads every organization's fleet and writes every organization's aggregates, so it
-- is cross-tenant by nature; what it must not have is the owner's power over the schema (drop
-- or alter a table, turn row-level security off, read the tenant seal's key) nor any read of
-- tenant data it does not load (console users, alerts, contacts, notifications...). After
-- this migration:
--
-- * <database>_etl (LOGIN, NOINHERIT, no other attribute) is a member of altaviz_etl_tenant
--   only. Outside a tenant transaction it holds exactly what the load needs across organizations:
--   the compressors' and maintenance windows' columns the ETL reads, the (org_id, hour) of
--   existing aggregates (the existence probe), INSERT into the monthly partitions (the COPY
--   of new hours), the staging table, and its bookkeeping (etl_runs, etl_stage_progress,
--   etl_unevaluated_hours). Existing roles are checked as in migration 100: the migration
--   fails, naming the role and the fix, if either has SUPERUSER, BYPASSRLS, CREATEROLE,
--   CREATEDB or REPLICATION, or a membership beyond altaviz_etl_tenant (so it can never
--   become the owner, the runtime login or the tenant role altaviz_app).
-- * altaviz_etl_tenant (NOLOGIN, cluster-wide like altaviz_app; not altaviz_etl, which is the
--   ETL login of a database named altaviz) is the ETL's tenant role: the ETL's
--   per-organization writes (the guarded upsert of changed hours, watermarks, data-quality
--   checks) switch to it and enter the organization with enter_tenant, so row-level security
--   (WITH CHECK) refuses a row of another organization, exactly as for the application. It
--   may read and write those three tables and read the two columns of organizations and
--   compressors the writes consult; nothing else of a tenant.
-- * Monthly partitions. The ETL creates a month's partition when its first hour arrives
--   (a plain table COPYed and then attached, migration 061), and creating or attaching a
--   partition needs ownership of agg_compressor_hours. Pre-creating partitions would need a
--   scheduler that runs ahead of the data, and a backfill of old months would still need the
--   owner. So the three functions that create, load and attach a month
--   (ensure_agg_partition, begin_agg_month_load, finish_agg_month_load) become SECURITY
--   DEFINER functions of the owner, the standard way to let a role perform one privileged
--   action: a fixed search_path (pg_catalog, pg_temp: every object is schema-qualified, a
--   temporary object cannot stand in for one), the month's name and bounds derived from a
--   validated timestamp (not null, finite, years 2000-2199) rather than taken from the
--   caller, EXECUTE revoked from PUBLIC and granted to the ETL login alone. Each new partition
--   (and loading table) grants INSERT to the ETL login and nothing else; the ETL cannot create
--   a table anywhere (no CREATE on the schema).
-- * etl_agg_staging is no longer under row-level security: COPY cannot write a table under
--   RLS (the owner's COPY of late hours failed since FORCE ROW LEVEL SECURITY, migration 100),
--   and no tenant role may read it any more (the application never did). The ETL's upsert
--   reads only the current organization's staged rows, and the target table's WITH CHECK
--   refuses any other.
-- * Roles are created by the migrating login's own rights (this file runs as the owner,
--   which may not create roles): the block below steps back to the migrating login for the
--   role work and returns to the owner at its end. A login that may not create or grant
--   roles stops here with the statements a superuser runs first, then migrates again (after
--   migration 100 has run: the owner may not be a member of altaviz_etl_tenant before it).

ALTER TABLE altaviz_roles DROP CONSTRAINT altaviz_roles_kind_check;
ALTER TABLE altaviz_roles ADD CONSTRAINT altaviz_roles_kind_check
    CHECK (kind IN ('owner', 'runtime', 'etl'));

DO $$
DECLARE
    db text := current_database();
    etl_role text := db || '_etl';
    owner_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'owner');
    me pg_roles%ROWTYPE;
    problem text;
    fix text;
BEGIN
    RESET ROLE;   -- the migrating login (this transaction runs as the owner)
    SELECT * INTO me FROM pg_roles WHERE rolname = current_user;
    fix := format('as a superuser: CREATE ROLE altaviz_etl_tenant NOLOGIN NOINHERIT; CREATE '
                  'ROLE %I LOGIN NOINHERIT PASSWORD ''...''; GRANT altaviz_etl_tenant TO %I, '
                  '%I; then `altaviz db migrate` again (docs/OPERATIONS.md, "Database roles")',
                  etl_role, etl_role, owner_role);
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'altaviz_etl_tenant') THEN
        IF NOT (me.rolsuper OR me.rolcreaterole) THEN
            RAISE EXCEPTION 'role altaviz_etl_tenant does not exist and % may not create '
                            'roles: %', current_user, fix
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        CREATE ROLE altaviz_etl_tenant NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB
            NOCREATEROLE NOREPLICATION;
    END IF;
    problem := altaviz_role_problem('altaviz_etl_tenant', '{}', false);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = etl_role) THEN
        IF NOT (me.rolsuper OR me.rolcreaterole) THEN
            RAISE EXCEPTION 'role % does not exist and % may not create roles: %', etl_role,
                            current_user, fix USING ERRCODE = 'insufficient_privilege';
        END IF;
        EXECUTE format('CREATE ROLE %I LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB '
                       'NOCREATEROLE NOREPLICATION', etl_role);
    END IF;
    problem := altaviz_role_problem(etl_role, ARRAY['altaviz_etl_tenant'], true);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO altaviz_roles VALUES ('etl', etl_role);
    -- the ETL login enters tenants as altaviz_etl_tenant; so may the owner (an installation
    -- without an ETL URL runs the ETL as the owner, as before)
    IF NOT (pg_has_role(etl_role, 'altaviz_etl_tenant', 'MEMBER')
            AND pg_has_role(owner_role, 'altaviz_etl_tenant', 'MEMBER'))
       AND NOT pg_has_role(current_user, 'altaviz_etl_tenant', 'MEMBER WITH ADMIN OPTION')
    THEN
        RAISE EXCEPTION '% may not grant altaviz_etl_tenant to % and %: %', current_user,
                        etl_role, owner_role, fix USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_has_role(etl_role, 'altaviz_etl_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT altaviz_etl_tenant TO %I', etl_role);
    END IF;
    IF NOT pg_has_role(owner_role, 'altaviz_etl_tenant', 'MEMBER') THEN
        EXECUTE format('GRANT altaviz_etl_tenant TO %I', owner_role);
    END IF;
    IF NOT has_database_privilege(etl_role, db, 'CONNECT') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', db, etl_role);
    END IF;
    EXECUTE format('SET LOCAL ROLE %I', owner_role);
END $$;

GRANT EXECUTE ON FUNCTION enter_tenant(text) TO altaviz_etl_tenant;

-- The month functions, owned by the owner and run with its rights (see the header).
CREATE OR REPLACE FUNCTION agg_month_of(ts timestamptz, OUT part_name text,
                                        OUT lo timestamptz, OUT hi timestamptz)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ts IS NULL OR NOT isfinite(ts) OR ts < '2000-01-01T00:00Z'::timestamptz
       OR ts >= '2200-01-01T00:00Z'::timestamptz THEN
        RAISE EXCEPTION 'no month partition for %', quote_nullable(ts)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'aggregate hours lie between 2000 and 2199';
    END IF;
    SELECT b.part_name, b.lo, b.hi INTO part_name, lo, hi FROM public.agg_month_bounds(ts) b;
END $$;

CREATE OR REPLACE FUNCTION add_agg_owner_triggers(part regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER agg_owned_insert AFTER INSERT ON %s '
                   'REFERENCING NEW TABLE AS written FOR EACH STATEMENT '
                   'EXECUTE FUNCTION public.agg_rows_owned()', part);
    EXECUTE format('CREATE TRIGGER agg_owned_update AFTER UPDATE ON %s '
                   'REFERENCING NEW TABLE AS written FOR EACH STATEMENT '
                   'EXECUTE FUNCTION public.agg_rows_owned()', part);
END $$;

-- The ETL login's name (INSERT on each new partition goes to it alone).
CREATE FUNCTION altaviz_etl_login() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT rolname::text FROM public.altaviz_roles WHERE kind = 'etl'
$$;

CREATE OR REPLACE FUNCTION ensure_agg_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
BEGIN
    b := public.agg_month_of(ts);
    IF to_regclass(format('public.%I', b.part_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE public.%I PARTITION OF public.agg_compressor_hours '
                       'FOR VALUES FROM (%L) TO (%L)', b.part_name, b.lo, b.hi);
        PERFORM public.add_agg_owner_triggers(format('public.%I', b.part_name)::regclass);
        EXECUTE format('REVOKE ALL ON public.%I FROM altaviz_app', b.part_name);
        EXECUTE format('GRANT INSERT ON public.%I TO %I', b.part_name,
                       public.altaviz_etl_login());
    END IF;
    RETURN b.part_name;
END $$;

CREATE OR REPLACE FUNCTION begin_agg_month_load(ts timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
    loading text;
BEGIN
    b := public.agg_month_of(ts);
    loading := b.part_name || '_loading';
    IF to_regclass(format('public.%I', b.part_name)) IS NOT NULL
       OR EXISTS (SELECT 1 FROM public.agg_compressor_hours_default
                  WHERE hour >= b.lo AND hour < b.hi)
    THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS public.%I', loading);
    EXECUTE format('CREATE TABLE public.%I (LIKE public.agg_compressor_hours INCLUDING DEFAULTS '
                   'INCLUDING CONSTRAINTS INCLUDING STORAGE, CONSTRAINT month_bounds CHECK '
                   '(hour >= %L AND hour < %L))', loading, b.lo, b.hi);
    EXECUTE format('GRANT INSERT ON public.%I TO %I', loading, public.altaviz_etl_login());
    RETURN loading;
END $$;

CREATE OR REPLACE FUNCTION finish_agg_month_load(ts timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b record;
    bad record;
BEGIN
    b := public.agg_month_of(ts);
    EXECUTE format(
        'SELECT w.org_id, w.compressor_id '
        'FROM (SELECT DISTINCT org_id, compressor_id FROM public.%I) w '
        'WHERE NOT EXISTS (SELECT 1 FROM public.compressors c '
        '                  WHERE c.org_id = w.org_id AND c.compressor_id = w.compressor_id) '
        'LIMIT 1', b.part_name || '_loading') INTO bad;
    IF bad.compressor_id IS NOT NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('%s: compressor %L is not a compressor of organization %L',
                             b.part_name || '_loading', bad.compressor_id, bad.org_id),
            HINT = 'aggregate rows must belong to a compressor the organization owns';
    END IF;
    EXECUTE format('ALTER TABLE public.%I RENAME TO %I', b.part_name || '_loading',
                   b.part_name);
    PERFORM public.add_agg_owner_triggers(format('public.%I', b.part_name)::regclass);
    EXECUTE format('ALTER TABLE public.agg_compressor_hours ATTACH PARTITION public.%I '
                   'FOR VALUES FROM (%L) TO (%L)', b.part_name, b.lo, b.hi);
    EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT month_bounds', b.part_name);
    EXECUTE format('REVOKE ALL ON public.%I FROM altaviz_app', b.part_name);
    RETURN b.part_name;
END $$;

REVOKE EXECUTE ON FUNCTION ensure_agg_partition(timestamptz), begin_agg_month_load(timestamptz),
    finish_agg_month_load(timestamptz), add_agg_owner_triggers(regclass),
    altaviz_etl_login() FROM PUBLIC;

-- Staging: the ETL's own working table (see the header).
DROP POLICY tenant_isolation ON etl_agg_staging;
DROP POLICY owner_access ON etl_agg_staging;
ALTER TABLE etl_agg_staging NO FORCE ROW LEVEL SECURITY;
ALTER TABLE etl_agg_staging DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON etl_agg_staging FROM altaviz_app;
GRANT SELECT ON etl_agg_staging TO altaviz_etl_tenant;

-- The ETL's tenant role: what one organization's writes need, confined by RLS.
GRANT SELECT, INSERT, UPDATE ON agg_compressor_hours, etl_watermarks TO altaviz_etl_tenant;
GRANT SELECT, INSERT ON data_quality_checks TO altaviz_etl_tenant;
GRANT SELECT (org_id, upload_cadence_minutes) ON organizations TO altaviz_etl_tenant;
GRANT SELECT (org_id, compressor_id) ON compressors TO altaviz_etl_tenant;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agg_compressor_hours', 'etl_watermarks', 'data_quality_checks',
                             'organizations', 'compressors'] LOOP
        EXECUTE format('CREATE POLICY etl_tenant ON %I TO altaviz_etl_tenant '
                       'USING (org_id = (SELECT current_org())) '
                       'WITH CHECK (org_id = (SELECT current_org()))', t);
    END LOOP;
END $$;

-- The ETL login: its cross-organization reads and writes (current_org() is always NULL for
-- it: enter_tenant is the tenant role's, which a NOINHERIT login holds only after SET ROLE).
DO $$
DECLARE
    etl_role text := (SELECT rolname FROM altaviz_roles WHERE kind = 'etl');
    t record;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', etl_role);
    EXECUTE format('GRANT SELECT (org_id, compressor_id, site_id, channels, stages, driver) '
                   'ON compressors TO %I', etl_role);
    EXECUTE format('GRANT SELECT ON maintenance_windows TO %I', etl_role);
    EXECUTE format('GRANT SELECT (org_id, hour) ON agg_compressor_hours TO %I', etl_role);
    EXECUTE format('GRANT SELECT (org_id) ON etl_watermarks TO %I', etl_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON etl_unevaluated_hours TO %I',
                   etl_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE etl_unevaluated_hours_id_seq TO %I', etl_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON etl_runs, etl_stage_progress TO %I',
                   etl_role);
    EXECUTE format('GRANT SELECT, INSERT, TRUNCATE ON etl_agg_staging TO %I', etl_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION ensure_agg_partition(timestamptz), '
                   'begin_agg_month_load(timestamptz), finish_agg_month_load(timestamptz) '
                   'TO %I', etl_role);
    FOR t IN SELECT * FROM (VALUES ('compressors', 'SELECT'),
                                   ('maintenance_windows', 'SELECT'),
                                   ('agg_compressor_hours', 'SELECT'),
                                   ('etl_watermarks', 'SELECT'),
                                   ('etl_unevaluated_hours', 'ALL')) v(tab, cmd)
    LOOP
        EXECUTE format('CREATE POLICY etl_loader ON %I FOR %s TO %I USING (true)%s',
                       t.tab, t.cmd, etl_role,
                       CASE WHEN t.cmd = 'ALL' THEN ' WITH CHECK (true)' ELSE '' END);
    END LOOP;
    -- the partitions that exist (and any loading table a crashed load left)
    FOR t IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r'
               AND (c.oid IN (SELECT inhrelid FROM pg_inherits
                              WHERE inhparent = 'agg_compressor_hours'::regclass)
                    OR c.relname ~ '^agg_compressor_hours_[0-9]{4}_[0-9]{2}_loading$')
               AND c.relname <> 'agg_compressor_hours_default'
    LOOP
        EXECUTE format('GRANT INSERT ON %I TO %I', t.relname, etl_role);
    END LOOP;
END $$;
