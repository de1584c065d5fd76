"""A month with no aggregate partition yet is COPYed into a plain table and attached as the
partition (migration 061): afterwards it is an ordinary partition with its key and ownership
checks, and what a crashed load left behind is discarded, not counted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, series, write_landing

PART = f"agg_compressor_hours_{T0:%Y_%m}"
#: a row of the base table with one metric (the first) present
ARRAY_ROW = ("INSERT INTO {table} (org_id, compressor_id, hour, n, mean, outliers, late) "
             "VALUES {values}")
VALUES = "(%s, %s, %s, '{6}', '{-1.0}', '{0}', '{0}')"


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with db.admin(conn):
        return conn.execute("SELECT org_id, compressor_id, metric, hour, n, mean, mean_24h "
                            "FROM sensor_readings_agg ORDER BY 1, 2, 3, 4").fetchall()


def test_a_new_month_is_attached_as_an_ordinary_partition(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    write_landing(settings.landing_path, series("COMP-0001", T0, 3),
                  T0 + timedelta(hours=3, minutes=5))
    summary = run_pipeline(settings, db_url)
    first = len(_rows(conn))
    assert first == summary.hours_upserted > 0
    with db.admin(conn):
        attached = conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits "
            "WHERE inhparent = 'agg_compressor_hours'::regclass ORDER BY 1").fetchall()
        leftovers = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE "
                                 "'agg_compressor_hours%loading'").fetchone()
        key = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass "
                           "AND indisprimary", [PART]).fetchone()
        checks = conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                              "AND contype = 'c' ORDER BY 1", [PART]).fetchall()
    assert (PART,) in attached and leftovers == (0,) and key == (1,)
    assert checks == [("agg_compressor_hours_n_check",)]   # the month's bound is gone
    # its ownership triggers came along, and the key refuses a second copy of a row
    with pytest.raises(psycopg.errors.ForeignKeyViolation), db.admin(conn):
        conn.execute(ARRAY_ROW.format(table=PART, values=VALUES), ["acme", "COMP-0003", T0])
    with pytest.raises(psycopg.errors.UniqueViolation), db.admin(conn):
        conn.execute(ARRAY_ROW.format(table=PART, values=VALUES), ["acme", "COMP-0001", T0])
    # the next hour of the same month takes the ordinary path into that partition
    write_landing(settings.landing_path, series("COMP-0001", T0 + timedelta(hours=3), 1),
                  T0 + timedelta(hours=4, minutes=5))
    assert run_pipeline(settings, db_url).hours_upserted > 0
    with db.admin(conn):
        again = conn.execute("SELECT count(*) FROM pg_inherits "
                             "WHERE inhparent = 'agg_compressor_hours'::regclass").fetchone()
    assert len(_rows(conn)) > first and again == (len(attached),)


def test_what_a_crashed_load_left_is_discarded(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        pg_server: Any, tmp_path: Any) -> None:
    # a load that crashed after its COPY: the plain table with rows, never attached
    with db.admin(conn):
        conn.execute("SELECT begin_agg_month_load(%s)", [T0])
        conn.execute(ARRAY_ROW.format(table=f"{PART}_loading", values=VALUES),
                     ["acme", "COMP-0001", T0])
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5))
    run_pipeline(settings, db_url)
    rows = _rows(conn)
    assert rows and all(r[5] != -1.0 for r in rows)
    with db.admin(conn):  # the leftover was replaced by the new load, which became the month
        names = conn.execute("SELECT relname FROM pg_class WHERE relname LIKE "
                             "'agg_compressor_hours%loading'").fetchall()
    assert names == []
    # the same as a clean run's
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import _fresh_database, two_tenant_fleet
    clean_url = _fresh_database(pg_server, "altaviz_test_template")
    with psycopg.connect(clean_url) as clean:
        load_fleet(clean, two_tenant_fleet())
        run_pipeline(settings.model_copy(update={"lake_dir": tmp_path / "clean_lake"}),
                     clean_url)
        assert _rows(clean) == rows


def test_a_loaded_month_is_checked_for_ownership_before_it_is_attached(
        fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    """The loading table has no ownership trigger (migration 062): its rows are checked once,
    all together, when it is attached; a row naming another organization's compressor keeps
    the whole month out of ``agg_compressor_hours``."""
    with db.admin(conn):
        loading = conn.execute("SELECT begin_agg_month_load(%s)", [T0]).fetchone()
        assert loading == (f"{PART}_loading",)
        conn.execute(ARRAY_ROW.format(table=f"{PART}_loading", values=f"{VALUES}, {VALUES}"),
                     ["acme", "COMP-0001", T0, "acme", "COMP-0003", T0])
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="COMP-0003"), db.admin(conn):
        conn.execute("SELECT finish_agg_month_load(%s)", [T0])
    with db.admin(conn):
        assert conn.execute("SELECT to_regclass(%s)", [PART]).fetchone() == (None,)
        conn.execute(f"DELETE FROM {PART}_loading WHERE compressor_id = 'COMP-0003'")
        assert conn.execute("SELECT finish_agg_month_load(%s)", [T0]).fetchone() == (PART,)
        triggers = conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass "
                                "AND NOT tgisinternal ORDER BY 1", [PART]).fetchall()
    assert [r[0] for r in triggers if r[0].startswith("agg_owned")] == [
        "agg_owned_insert", "agg_owned_update"]
    assert len(_rows(conn)) == 1
