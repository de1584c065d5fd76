"""Least privilege in the database: the runtime login (worker, web server, CLI) is neither
owner nor superuser nor BYPASSRLS, and a tenant transaction of organization A cannot be turned
into one that reads organization B, whatever SQL it runs (RESET ROLE, SET ROLE to the owner,
set_config, a replayed seal, direct reads)."""

from __future__ import annotations

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql

from altaviz.core import db
from altaviz.core.errors import MigrationError
from altaviz.core.fleet_store import load_fleet
from tests.conftest import two_tenant_fleet

DANGEROUS = ("rolsuper", "rolbypassrls", "rolcreaterole", "rolcreatedb", "rolreplication")


def as_role(url: str, role: str) -> str:
    """``url`` with another user (the test servers trust local connections)."""
    return psycopg.conninfo.make_conninfo(url, user=role)


def _roles(url: str) -> dict[str, str]:
    with db.connect(url) as conn:
        return db.role_names(conn)


def test_roles_have_no_dangerous_attributes_and_own_what_they_should(
        db_url: str) -> None:
    roles = _roles(db_url)
    with db.connect(db_url) as conn:
        for kind in ("owner", "runtime"):
            row = conn.execute(f"SELECT {', '.join(DANGEROUS)}, rolcanlogin FROM pg_roles "
                               "WHERE rolname = %s", [roles[kind]]).fetchone()
            assert row == (False,) * len(DANGEROUS) + (True,), kind
        member_of = {r[0] for r in conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s", [roles["runtime"]])}
        assert member_of == {db.APP_ROLE}
        # every object of the schema belongs to the owner, none to the superuser that migrated
        owners = {r[0] for r in conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "UNION SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'")}
        assert owners == {roles["owner"]}
        unforced = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relrowsecurity AND NOT c.relforcerowsecurity"
        ).fetchall()
        assert unforced == []
        # every tenant table (an org_id column) is under forced row-level security, but the
        # ETL's staging table, which no tenant role may read and COPY could not fill under RLS
        tenant_unforced = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id' "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname NOT LIKE '%\\_loading' AND NOT c.relforcerowsecurity").fetchall()
        assert tenant_unforced == [("etl_agg_staging",)]
        assert conn.execute("SELECT has_table_privilege(%s, 'etl_agg_staging', 'SELECT')",
                            [db.APP_ROLE]).fetchone() == (False,)


def _attack(url: str) -> None:
    """Everything a runtime connection working for acme tries to reach bravo's rows."""
    roles = _roles(url)
    with db.connect(url) as owner_conn:
        load_fleet(owner_conn, two_tenant_fleet())
    with db.connect(as_role(url, roles["runtime"]), autocommit=True) as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (
            roles["runtime"], roles["runtime"])
        # outside a tenant: nothing at all
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT count(*) FROM compressors")
        assert db.org_ids(conn) == ["acme", "bravo"]
        with db.tenant(conn, "bravo"):
            bravo_seal = conn.execute(
                "SELECT current_setting('altaviz.tenant_seal')").fetchone()
        with db.tenant(conn, "acme"):
            assert conn.execute("SELECT count(*) FROM compressors").fetchone() == (2,)
        attempts: dict[str, str | sql.Composed] = {
            "RESET ROLE": "RESET ROLE",
            "SET ROLE owner": sql.SQL("SET ROLE {}").format(sql.Identifier(roles["owner"])),
            "SET ROLE postgres": "SET ROLE postgres",
        }
        for name, statement in attempts.items():
            with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(conn, "acme"):
                conn.execute(statement)
                conn.execute("SELECT count(*) FROM compressors WHERE org_id = 'bravo'")
                pytest.fail(f"{name}: read compressors outside the tenant role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(conn, "acme"):
            conn.execute("SELECT enter_tenant('bravo')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(conn, "acme"):
            conn.execute("SELECT altaviz_tenant_seal('bravo')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(conn, "acme"):
            conn.execute("SELECT * FROM altaviz_tenant_key")
        forged = {
            "set_config": ("bravo", None),
            "replayed seal": ("bravo", bravo_seal[0] if bravo_seal else None),
        }
        for name, (org, seal) in forged.items():
            with db.tenant(conn, "acme"):
                conn.execute("SELECT set_config('altaviz.org_id', %s, true)", [org])
                if seal is not None:
                    conn.execute("SELECT set_config('altaviz.tenant_seal', %s, true)", [seal])
                for table in ("compressors", "organizations", "sites", "contacts"):
                    seen = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                    assert seen == (0,), f"{name}: {table} shows rows"
        with db.tenant(conn, "acme"):
            direct = conn.execute(
                "SELECT count(*) FROM compressors WHERE org_id = 'bravo'").fetchone()
            assert direct == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(conn, "acme"):
            conn.execute("SELECT count(*) FROM etl_runs")


def test_runtime_role_cannot_leave_its_tenant(db_url: str) -> None:
    _attack(db_url)


@pytest.mark.pg15
def test_runtime_role_cannot_leave_its_tenant_on_postgresql_15(pg15_url: str) -> None:
    db.migrate(pg15_url)
    _attack(pg15_url)


@pytest.mark.parametrize("attribute", ["BYPASSRLS", "SUPERUSER", "CREATEROLE"])
def test_migration_refuses_an_existing_role_with_a_dangerous_attribute(
        empty_db_url: str, attribute: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(empty_db_url)["dbname"]
    role = f"{name}_runtime"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN " + attribute).format(sql.Identifier(role)))
    try:
        with pytest.raises(MigrationError, match=f"{role}.* has {attribute}"):
            db.migrate(empty_db_url)
        with psycopg.connect(empty_db_url) as conn:
            assert conn.execute("SELECT to_regclass('altaviz_roles')").fetchone() == (None,)
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_migration_refuses_a_runtime_role_that_can_become_the_owner(
        empty_db_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(empty_db_url)["dbname"]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(f"{name}_owner")))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
            sql.Identifier(f"{name}_runtime"), sql.Identifier(f"{name}_owner")))
    try:
        with pytest.raises(MigrationError, match=f"{name}_runtime.* member of {name}_owner"):
            db.migrate(empty_db_url)
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}, {}").format(
                sql.Identifier(f"{name}_runtime"), sql.Identifier(f"{name}_owner")))
