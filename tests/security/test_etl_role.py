"""The ETL's own login, ``<database>_etl`` (migration 200): the full load, the hourly run and
late data all work through it, yet it can neither change the schema, nor read the tenant data
it does not load, nor become another role, nor create a partition but through the owner's
function."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from activities.etl import changed_hours
from altaviz.core import db
from altaviz.core.errors import MigrationError
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from tests.conftest import two_tenant_fleet
from tests.etl.landing import T0, reading, write_landing

DANGEROUS = ("rolsuper", "rolbypassrls", "rolcreaterole", "rolcreatedb", "rolreplication")
UNITS = ("COMP-0001", "COMP-0002", "COMP-0003", "COMP-0004")


def as_role(url: str, role: str) -> str:
    """``url`` with another user (the test servers trust local connections)."""
    return psycopg.conninfo.make_conninfo(url, user=role)


def _roles(url: str) -> dict[str, str]:
    with db.connect(url) as conn:
        return db.role_names(conn)


def _hours(landing: Path, hours: range, arrived: datetime, offset: int = 0, **values: Any
           ) -> None:
    """Six readings an hour of every unit, ``offset`` minutes past each ten."""
    write_landing(landing, [reading(c, T0 + timedelta(hours=k, minutes=10 * i + offset),
                                    **values)
                            for c in UNITS for k in hours for i in range(6)], arrived)


def test_the_etl_role_has_no_dangerous_attribute_and_one_membership(db_url: str) -> None:
    roles = _roles(db_url)
    with db.connect(db_url) as conn:
        row = conn.execute(f"SELECT {', '.join(DANGEROUS)}, rolcanlogin, rolinherit "
                           "FROM pg_roles WHERE rolname = %s", [roles["etl"]]).fetchone()
        assert row == (False,) * len(DANGEROUS) + (True, False)
        member_of = {r[0] for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s", [roles["etl"]])}
        assert member_of == {db.ETL_ROLE}
        assert db.etl_role_problem(conn, roles["etl"]) is None
        group = conn.execute(f"SELECT {', '.join(DANGEROUS)}, rolcanlogin FROM pg_roles "
                             "WHERE rolname = %s", [db.ETL_ROLE]).fetchone()
        assert group == (False,) * (len(DANGEROUS) + 1)
        # the month functions run as the owner, with a search path no caller can change
        for fn in ("ensure_agg_partition", "begin_agg_month_load", "finish_agg_month_load"):
            definer, config, owner = conn.execute(
                "SELECT prosecdef, proconfig, pg_get_userbyid(proowner) FROM pg_proc "
                "WHERE proname = %s", [fn]).fetchone() or (None, None, None)
            assert (definer, config, owner) == (
                True, ["search_path=pg_catalog, pg_temp"], roles["owner"]), fn
            assert conn.execute("SELECT has_function_privilege('public', %s, 'EXECUTE')",
                                [f"{fn}(timestamptz)"]).fetchone() == (False,)


@pytest.mark.parametrize("login", ["etl", "owner"])
def test_full_load_hourly_run_and_late_data_as_the_etl_role(db_url: str, tmp_path: Path,
                                                            login: str) -> None:
    """As the ETL login, and as the owner (an installation without an ETL URL)."""
    roles = _roles(db_url)
    etl_url = as_role(db_url, roles[login])
    with db.connect(etl_url) as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (
            roles[login], roles[login])
    with db.connect(db_url) as owner:
        load_fleet(owner, two_tenant_fleet())
        with owner.transaction():   # the quality stage reads maintenance windows
            owner.execute("INSERT INTO maintenance_windows (org_id, compressor_id, starts_at, "
                          "ends_at, reason, created_by) VALUES ('acme', 'COMP-0002', %s, %s, "
                          "'overhaul', 'test')", [T0, T0 + timedelta(hours=3)])
    settings = Settings(data_dir=tmp_path, landing_dir=tmp_path / "landing",
                        lake_dir=tmp_path / "lake", late_arrival_minutes=240)

    # the full load: a month with no partition yet, copied into a table the ETL may only fill
    # and attached by the owner's function
    _hours(settings.landing_path, range(0, 30), T0 + timedelta(hours=30, minutes=5),
           oil_temp_f=150.0)
    assert run_pipeline(settings, etl_url).hours_upserted > 0
    # the next hour: COPY straight into the partition
    _hours(settings.landing_path, range(30, 31), T0 + timedelta(hours=31, minutes=5),
           oil_temp_f=160.0)
    assert run_pipeline(settings, etl_url).hours_upserted > 0
    # late data for hours already loaded: staging, then each organization's guarded upsert
    # in a tenant transaction of the ETL's tenant role
    _hours(settings.landing_path, range(2, 3), T0 + timedelta(hours=32), offset=5,
           oil_temp_f=199.0)
    late = run_pipeline(settings, etl_url)
    assert {(c.org_id, c.compressor_id) for c in late.changed} == {
        ("acme", "COMP-0001"), ("acme", "COMP-0002"), ("bravo", "COMP-0003"),
        ("bravo", "COMP-0004")}
    # the scheduled pipeline's reader of changed hours works as the ETL login too
    taken = changed_hours(etl_url, T0 + timedelta(hours=31), [], False)
    assert T0 in taken and T0 + timedelta(hours=30) in taken

    with db.connect(db_url) as conn, conn.transaction():
        part = "agg_compressor_hours_2025_03"
        assert conn.execute(
            "SELECT pg_get_userbyid(c.relowner), has_table_privilege(%s, c.oid, 'INSERT'), "
            "has_table_privilege(%s, c.oid, 'SELECT') FROM pg_class c WHERE relname = %s",
            [roles["etl"], roles["etl"], part]).fetchone() == (roles["owner"], True, False)
        hours = conn.execute("SELECT count(DISTINCT hour), count(*) FROM agg_compressor_hours"
                             ).fetchone()
        assert hours == (31, 31 * len(UNITS))
        late_mean = conn.execute(
            "SELECT mean FROM sensor_readings_agg WHERE compressor_id = 'COMP-0003' "
            "AND metric = 'oil_temp_f' AND hour = %s", [T0 + timedelta(hours=2)]).fetchone()
        assert late_mean is not None and 150.0 < late_mean[0] <= 199.0
        runs = conn.execute("SELECT status, count(*) FROM etl_runs GROUP BY 1").fetchall()
        assert runs == [("succeeded", 3)]
        checks = conn.execute("SELECT count(DISTINCT org_id) FROM data_quality_checks"
                              ).fetchone()
        assert checks == (2,)
        marks = conn.execute("SELECT count(*) FROM etl_watermarks").fetchone()
        assert marks == (len(UNITS),)


def _refused(conn: psycopg.Connection[Any], statement: str | sql.Composed,
             org: str | None = None) -> str:
    """The SQLSTATE of ``statement`` run by ``conn`` (inside ``org``'s tenant transaction
    of the ETL's tenant role when given); fails the test when it succeeds."""
    try:
        if org is None:
            with conn.transaction():
                conn.execute(statement)
        else:
            with db.tenant(conn, org, role=db.ETL_ROLE):
                conn.execute(statement)
    except psycopg.Error as exc:
        return exc.sqlstate or "?"
    pytest.fail(f"the ETL login ran {statement!r}")


def test_the_etl_role_cannot_change_the_schema_read_tenant_data_or_become_another_role(
        db_url: str) -> None:
    roles = _roles(db_url)
    with db.connect(db_url) as owner:
        load_fleet(owner, two_tenant_fleet())
        with owner.transaction():
            owner.execute("SELECT ensure_agg_partition(%s)", [T0])
    denied = "42501"  # insufficient_privilege
    with db.connect(as_role(db_url, roles["etl"]), autocommit=True) as conn:
        attempts: dict[str, tuple[str | sql.Composed, str | None]] = {
            "drop a table": ("DROP TABLE etl_runs", None),
            "drop the aggregates": ("DROP TABLE agg_compressor_hours CASCADE", None),
            "truncate the aggregates": ("TRUNCATE agg_compressor_hours", None),
            "disable RLS": ("ALTER TABLE agg_compressor_hours DISABLE ROW LEVEL SECURITY", None),
            "stop forcing RLS": ("ALTER TABLE data_quality_checks NO FORCE ROW LEVEL SECURITY",
                                 None),
            "drop a policy": ("DROP POLICY etl_tenant ON agg_compressor_hours", None),
            "read console users": ("SELECT count(*) FROM console_users", None),
            "read alerts": ("SELECT count(*) FROM alert_history", None),
            "read alert events": ("SELECT count(*) FROM alert_events", None),
            "read contacts": ("SELECT count(*) FROM contacts", None),
            "read console users in a tenant": ("SELECT count(*) FROM console_users", "acme"),
            "read alerts in a tenant": ("SELECT count(*) FROM alert_history", "acme"),
            "read notifications in a tenant": ("SELECT count(*) FROM notifications", "acme"),
            "read the seal's key": ("SELECT * FROM altaviz_tenant_key", None),
            "enter a tenant without the tenant role": ("SELECT enter_tenant('acme')", None),
            "SET ROLE owner": (sql.SQL("SET ROLE {}").format(sql.Identifier(roles["owner"])),
                               None),
            "SET ROLE runtime": (sql.SQL("SET ROLE {}").format(
                sql.Identifier(roles["runtime"])), None),
            "SET ROLE altaviz_app": (sql.SQL("SET ROLE {}").format(
                sql.Identifier(db.APP_ROLE)), None),
            "SET ROLE postgres": ("SET ROLE postgres", None),
            "create a partition": (
                "CREATE TABLE agg_compressor_hours_2031_01 PARTITION OF agg_compressor_hours "
                "FOR VALUES FROM ('2031-01-01T00:00Z') TO ('2031-02-01T00:00Z')", None),
            "create a table": ("CREATE TABLE etl_scratch (x int)", None),
            "attach a table": (
                "ALTER TABLE agg_compressor_hours ATTACH PARTITION etl_agg_staging "
                "FOR VALUES FROM ('2031-01-01T00:00Z') TO ('2031-02-01T00:00Z')", None),
            "read the aggregates' values": ("SELECT mean FROM agg_compressor_hours", None),
            "update an organization": (
                "UPDATE organizations SET upload_cadence_minutes = 1", "acme"),
        }
        for name, (statement, org) in attempts.items():
            assert _refused(conn, statement, org) == denied, name
        # the owner's function takes a timestamp and nothing else, and checks it
        for bad in ("'infinity'", "NULL", "'1970-01-01T00:00Z'"):
            assert _refused(conn, f"SELECT ensure_agg_partition({bad}::timestamptz)"
                            ) == "22023", bad
        with conn.transaction():
            assert conn.execute("SELECT ensure_agg_partition('2031-01-15T00:00Z')"
                                ).fetchone() == ("agg_compressor_hours_2031_01",)
        # in acme's tenant transaction the ETL sees and writes acme's rows only
        with db.tenant(conn, "acme", role=db.ETL_ROLE):
            seen = conn.execute("SELECT DISTINCT org_id FROM compressors").fetchall()
            assert seen == [("acme",)]
        assert _refused(conn, "INSERT INTO etl_watermarks (org_id, compressor_id, "
                              "last_reading_at, last_loaded_at) VALUES "
                              "('bravo', 'COMP-0003', now(), now())", "acme") == "42501"
        with db.tenant(conn, "acme", role=db.ETL_ROLE):
            assert conn.execute("SELECT enter_tenant('acme')").fetchone() is not None
        assert _refused(conn, "SELECT enter_tenant('bravo')", "acme") == denied


@pytest.mark.parametrize("attribute", ["SUPERUSER", "BYPASSRLS"])
def test_migration_refuses_an_existing_etl_role_with_a_dangerous_attribute(
        empty_db_url: str, attribute: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(empty_db_url)["dbname"]
    role = f"{name}_etl"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN " + attribute).format(sql.Identifier(role)))
    try:
        with pytest.raises(MigrationError, match=f"200_etl_role.sql.*{role}.* has {attribute}"):
            db.migrate(empty_db_url)
        with psycopg.connect(empty_db_url) as conn:
            assert db.role_names(conn).get("etl") is None
            assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
                max(m.version for m in db.migration_files() if m.version < 200),)
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_migration_refuses_an_etl_role_that_can_become_the_owner(empty_db_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(empty_db_url)["dbname"]
    owner, etl = f"{name}_owner", f"{name}_etl"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
            sql.Identifier(etl), sql.Identifier(owner)))
    try:
        with pytest.raises(MigrationError, match=f"{etl}.* member of {owner}"):
            db.migrate(empty_db_url)
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(etl)))


def test_migration_refuses_an_etl_tenant_role_that_bypasses_row_level_security(
        empty_db_url: str) -> None:
    """The tenant role is cluster-wide: one created (or altered) by someone else is checked."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE "
                             "rolname = {0}) THEN CREATE ROLE {1} NOLOGIN; END IF; END $$"
                             ).format(sql.Literal(db.ETL_ROLE), sql.Identifier(db.ETL_ROLE)))
        conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(db.ETL_ROLE)))
    try:
        with pytest.raises(MigrationError, match=f"{db.ETL_ROLE} has BYPASSRLS"):
            db.migrate(empty_db_url)
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOBYPASSRLS").format(
                sql.Identifier(db.ETL_ROLE)))


def test_a_migrating_owner_that_may_not_create_roles_is_told_what_to_run(
        empty_db_url: str) -> None:
    """The managed-service set-up: the owner migrates and may not create roles. Migration 200
    stops with the statements a superuser runs; after them it applies."""
    name = str(psycopg.conninfo.conninfo_to_dict(empty_db_url)["dbname"])
    owner, runtime, etl = (f"{name}_{k}" for k in ("owner", "runtime", "etl"))
    with psycopg.connect(empty_db_url, autocommit=True) as su:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(sql.Identifier(runtime)))
        su.execute(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
            sql.Identifier(db.APP_ROLE), sql.Identifier(owner)))
        su.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(name), sql.Identifier(owner)))
    owner_url = as_role(empty_db_url, owner)
    try:
        with pytest.raises(MigrationError, match=f"role {etl} does not exist and {owner} may "
                           f"not create roles: as a superuser: .*GRANT {db.ETL_ROLE} TO "
                           f"{etl}, {owner}; then `altaviz db migrate` again"):
            db.migrate(owner_url)
        with psycopg.connect(owner_url) as conn:
            assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
                max(m.version for m in db.migration_files() if m.version < 200),)
        with psycopg.connect(empty_db_url, autocommit=True) as su:
            su.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(sql.Identifier(etl)))
            su.execute(sql.SQL("GRANT {} TO {}, {}").format(
                sql.Identifier(db.ETL_ROLE), sql.Identifier(etl), sql.Identifier(owner)))
        applied = db.migrate(owner_url)
        assert applied and applied[0].version == 200
        assert _roles(owner_url)["etl"] == etl
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as su:
            su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(etl)))
            su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(etl)))
