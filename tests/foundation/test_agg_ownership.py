"""Hourly aggregates belong to a compressor their organization owns, checked by the database
once per statement (migration 060) for every way in: the long view ``sensor_readings_agg``,
the partitioned table ``agg_compressor_hours`` (migration 070), a partition named directly
(the ETL's COPY of new hours), a partition created later, COPY and UPDATE; and a compressor
that has aggregates cannot be deleted or moved to another organization."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.fleet import Fleet

ROW = ("INSERT INTO {table} (org_id, compressor_id, metric, hour, n) "
       "VALUES (%s, %s, 'oil_temp_f', %s, 6)")
#: the same row in the base table's shape (migration 070): metric 1 present
ARRAY_ROW = ("INSERT INTO {table} (org_id, compressor_id, hour, n, outliers, late) "
             "VALUES (%s, %s, %s, '{{6}}', '{{0}}', '{{0}}')")


def _partition(conn: psycopg.Connection[Any], ts: str) -> str:
    row = conn.execute("SELECT ensure_agg_partition(%s)", [ts]).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("target", ["sensor_readings_agg", "agg_compressor_hours", "new partition",
                                    "default partition"])
def test_a_row_of_a_compressor_the_org_does_not_own_is_refused(
        conn: psycopg.Connection[Any], fleet: Fleet, target: str) -> None:
    ts = "2031-05-01T03:00Z" if target == "new partition" else "2026-11-01T00:00Z"
    with db.admin(conn):
        table = {"sensor_readings_agg": "sensor_readings_agg",
                 "agg_compressor_hours": "agg_compressor_hours",
                 "new partition": _partition(conn, ts),
                 "default partition": "agg_compressor_hours_default"}[target]
        row = ROW if target == "sensor_readings_agg" else ARRAY_ROW
        if target == "default partition":
            ts = "1999-01-01T00:00Z"  # no monthly partition holds it
        # its own compressor: accepted
        conn.execute(row.format(table=table), ["acme", "COMP-0001", ts])
    # bravo's compressor, claimed by acme; one good row in the same statement does not help
    with pytest.raises(psycopg.errors.ForeignKeyViolation,
                       match="'COMP-0003' is not a compressor of organization 'acme'"), \
            db.admin(conn):
        conn.execute(row.format(table=table) + ", " + row.format(table=table).split("VALUES ")[1],
                     ["acme", "COMP-0002", ts, "acme", "COMP-0003", ts])
    with db.admin(conn):
        rows = conn.execute("SELECT org_id, compressor_id FROM sensor_readings_agg").fetchall()
    assert rows == [("acme", "COMP-0001")]


def test_copy_and_update_are_checked(conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    with db.admin(conn):
        part = _partition(conn, "2026-11-01T00:00Z")
        with conn.cursor().copy(f"COPY {part} (org_id, compressor_id, hour, n, outliers, late) "
                                "FROM STDIN") as copy:
            copy.write_row(("acme", "COMP-0001", "2026-11-01T00:00Z", "{6}", "{0}", "{0}"))
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.admin(conn):
        with conn.cursor().copy(f"COPY {part} (org_id, compressor_id, hour, n, outliers, late) "
                                "FROM STDIN") as copy:
            copy.write_row(("acme", "COMP-9999", "2026-11-01T01:00Z", "{6}", "{0}", "{0}"))
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.admin(conn):
        conn.execute("UPDATE agg_compressor_hours SET compressor_id = 'COMP-0004'")
    with db.admin(conn):  # an update that keeps the owner is fine
        conn.execute("UPDATE agg_compressor_hours SET compressor_id = 'COMP-0002'")


def test_a_compressor_with_aggregates_cannot_be_deleted_or_moved(
        conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    with db.admin(conn):
        conn.execute(ROW.format(table="sensor_readings_agg"),
                     ["acme", "COMP-0001", "2026-11-01T00:00Z"])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="still has hourly aggregates"), \
            db.admin(conn):
        conn.execute("DELETE FROM compressors WHERE compressor_id = 'COMP-0001'")
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.admin(conn):
        conn.execute("UPDATE compressors SET org_id = 'bravo', site_id = 'EF-01' "
                      "WHERE compressor_id = 'COMP-0001'")
    with db.admin(conn):  # one without aggregates can go
        conn.execute("DELETE FROM compressors WHERE compressor_id = 'COMP-0002'")
        left = conn.execute("SELECT count(*) FROM compressors WHERE org_id = 'acme'").fetchone()
    assert left == (1,)
