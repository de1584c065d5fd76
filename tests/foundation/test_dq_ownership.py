"""Data-quality rows belong to a compressor their organization owns, checked by the database
once per statement (migration 080, which replaced a per-row foreign key): for the tenant and
the owner, on INSERT and UPDATE; and a compressor that has checks cannot be deleted or moved
to another organization."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.fleet import Fleet

ROW = ("INSERT INTO data_quality_checks (org_id, compressor_id, run_id, check_type, measured, "
       "threshold, passed) VALUES (%s, %s, 'run-1', 'freshness', 1, 15, true)")


def test_a_check_of_a_compressor_the_org_does_not_own_is_refused(
        conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    with db.tenant(conn, "acme"):
        conn.execute(ROW, ["acme", "COMP-0001"])
    # bravo's compressor, claimed by acme (as owner: row-level security would stop a tenant
    # first); one good row in the same statement does not help
    with pytest.raises(psycopg.errors.ForeignKeyViolation,
                       match="'COMP-0003' is not a compressor of organization 'acme'"), \
            db.admin(conn):
        conn.execute(ROW + ", " + ROW.split("VALUES ")[1].replace("run-1", "run-2"),
                     ["acme", "COMP-0002", "acme", "COMP-0003"])
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.admin(conn):
        conn.execute("UPDATE data_quality_checks SET compressor_id = 'COMP-9999'")
    with db.admin(conn):
        rows = conn.execute("SELECT org_id, compressor_id FROM data_quality_checks").fetchall()
    assert rows == [("acme", "COMP-0001")]


def test_a_compressor_with_checks_cannot_be_deleted_or_moved(
        conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    with db.admin(conn):
        conn.execute(ROW, ["acme", "COMP-0001"])
    with pytest.raises(psycopg.errors.ForeignKeyViolation,
                       match="still has data-quality checks"), db.admin(conn):
        conn.execute("DELETE FROM compressors WHERE compressor_id = 'COMP-0001'")
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.admin(conn):
        conn.execute("UPDATE compressors SET org_id = 'bravo', site_id = 'EF-01' "
                     "WHERE compressor_id = 'COMP-0001'")
    with db.admin(conn):  # one without checks can go
        conn.execute("DELETE FROM compressors WHERE compressor_id = 'COMP-0002'")
        left = conn.execute("SELECT count(*) FROM compressors WHERE org_id = 'acme'").fetchone()
    assert left == (1,)
