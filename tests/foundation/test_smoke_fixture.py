"""The shared fixtures give a migrated database with the two-tenant fleet."""

from typing import Any

import psycopg

from altaviz.core import db
from altaviz.core.fleet import Fleet


def test_fleet_fixture_loads_two_tenants(conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    with db.tenant(conn, "acme"):
        ids = [r[0] for r in conn.execute("SELECT compressor_id FROM compressors ORDER BY 1")]
    assert ids == ["COMP-0001", "COMP-0002"]
    assert db.org_ids(conn) == ["acme", "bravo"]
