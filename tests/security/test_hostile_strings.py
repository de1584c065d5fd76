"""Hostile strings (SQL injection, path traversal, control characters) in organization
names, site and compressor ids are stored verbatim or rejected with a clear error; they never
change the schema or reach another tenant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altaviz.core import db
from altaviz.core.errors import InputError, TenantError
from altaviz.core.fleet import Compressor, Fleet, Organization, Site
from altaviz.core.fleet_store import load_fleet, read_fleet

HOSTILE = [
    "x'); DROP TABLE compressors; --",
    "Robert'); DELETE FROM organizations WHERE ('1'='1",
    "../../../etc/passwd",
    "..\\..\\windows\\system32",
    "COMP-0001\x00",
    "$$; DROP SCHEMA public CASCADE; $$",
    "%(org_id)s",
    "\"; SET ROLE postgres; --",
]


def _table_count(conn: psycopg.Connection[Any]) -> int:
    with db.admin(conn):
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                           ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_and_ids_are_stored_verbatim(
    conn: psycopg.Connection[Any], hostile: str
) -> None:
    tables = _table_count(conn)
    if "\x00" in hostile:
        # PostgreSQL text cannot hold NUL: refused by the driver, nothing written.
        with pytest.raises(psycopg.DataError):
            load_fleet(conn, _fleet(hostile))
        with db.admin(conn):
            assert conn.execute("SELECT count(*) FROM organizations").fetchone() == (0,)
        return
    load_fleet(conn, _fleet(hostile))
    with db.tenant(conn, "acme"):
        row = conn.execute("SELECT o.name, s.site_id, c.compressor_id FROM organizations o "
                           "JOIN sites s USING (org_id) JOIN compressors c USING (org_id)"
                           ).fetchone()
    assert row == (hostile, hostile, hostile)
    assert _table_count(conn) == tables


def _fleet(hostile: str) -> Fleet:
    return Fleet(
        organizations=(Organization(org_id="acme", name=hostile),),
        sites=(Site(org_id="acme", site_id=hostile, name=hostile, basin="Permian"),),
        compressors=(Compressor(org_id="acme", compressor_id=hostile, site_id=hostile,
                                model="Ariel JGK/4", rated_hp=1380, rated_rpm=1400, stages=3),),
    )


@pytest.mark.parametrize("org_id", ["Acme", "acme; drop", "../acme", "", "a" * 80, "acme\n"])
def test_hostile_organization_ids_are_rejected(org_id: str) -> None:
    with pytest.raises(ValueError, match="org_id"):
        Organization(org_id=org_id, name="x")


def test_tenant_refuses_hostile_org_ids(conn: psycopg.Connection[Any]) -> None:
    for org_id in ["acme' OR '1'='1", "acme; RESET ROLE", "ACME"]:
        with pytest.raises(TenantError), db.tenant(conn, org_id):
            pass


def test_fleet_file_errors_name_the_record(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"organizations": [{"org_id": "../etc", "name": "x"}],
                                "sites": [], "compressors": []}))
    with pytest.raises(InputError, match=r"fleet.json:1: organizations\[0\]\.org_id"):
        read_fleet(path)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s))
def test_any_organization_name_round_trips(conn: psycopg.Connection[Any], name: str) -> None:
    load_fleet(conn, Fleet(organizations=(Organization(org_id="acme", name=name),),
                           sites=(), compressors=()))
    with db.tenant(conn, "acme"):
        assert conn.execute("SELECT name FROM organizations").fetchone() == (name,)
