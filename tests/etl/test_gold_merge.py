"""Gold writes a late batch in two commits (changed rows merged, then new rows appended with the
batch mark): a crash between the two loses and doubles nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core import duck
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, reading, write_landing

COMPS = ("COMP-0001", "COMP-0002")


def _batches(landing: Path, step: int) -> None:
    if step == 0:
        rows = [reading(c, T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=150.0 + k + i)
                for c in COMPS for k in range(30) for i in range(6)]
        write_landing(landing, rows, T0 + timedelta(hours=30, minutes=5))
    else:
        # late readings for an hour gold holds (its rows and windows change) and a new hour
        rows = [reading(c, T0 + timedelta(hours=10, minutes=5 + 10 * i), oil_temp_f=199.0)
                for c in COMPS for i in range(3)]
        rows += [reading(c, T0 + timedelta(hours=30, minutes=10 * i), oil_temp_f=160.0)
                 for c in COMPS for i in range(6)]
        write_landing(landing, rows, T0 + timedelta(hours=31, minutes=5))


def _aggregates(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(
            "SELECT compressor_id, metric, hour, n, round(mean::numeric, 9), "
            "round(mean_24h::numeric, 9), round(stddev_4h::numeric, 9), outliers, late "
            "FROM sensor_readings_agg ORDER BY 1, 2, 3").fetchall()


def _gold_keys(lake_root: Path) -> tuple[int, int]:
    con = duck.connect()
    try:
        row = con.execute(f"""SELECT count(*), count(DISTINCT (compressor_id, metric, hour))
                              FROM delta_scan('{Lake(lake_root).uri("gold")}')""").fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def test_crash_between_gold_merge_and_append_loses_and_doubles_nothing(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        tmp_path: Path, pg_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import _fresh_database, two_tenant_fleet

    _batches(settings.landing_path, 0)
    run_pipeline(settings, db_url)
    _batches(settings.landing_path, 1)
    original = Lake.append
    merged_before_crash: list[int] = []

    def crash(self: Lake, table: str, data: Any, batch_id: int) -> None:
        if table == "gold":
            merged_before_crash.append(self.table("gold").version())
            raise RuntimeError("killed between gold's MERGE and its append")
        original(self, table, data, batch_id)

    monkeypatch.setattr(Lake, "append", crash)
    with pytest.raises(RuntimeError):
        run_pipeline(settings, db_url)
    monkeypatch.undo()
    history = Lake(settings.lake_path).table("gold").history()
    assert any(h.get("operation") == "MERGE" for h in history), "the MERGE did not commit"
    run_pipeline(settings, db_url)
    killed = _aggregates(conn)

    ref_url = _fresh_database(pg_server, "altaviz_test_template")
    ref = settings.model_copy(update={"lake_dir": tmp_path / "ref_lake",
                                      "landing_dir": tmp_path / "ref_landing"})
    with psycopg.connect(ref_url) as ref_conn:
        load_fleet(ref_conn, two_tenant_fleet())
        for step in (0, 1):
            _batches(ref.landing_path, step)
            run_pipeline(ref, ref_url)
        clean = _aggregates(ref_conn)
    assert merged_before_crash
    assert killed == clean
    rows, keys = _gold_keys(settings.lake_path)
    assert rows == keys == _gold_keys(ref.lake_path)[0]
    # the late hour really changed rows and the new hour really added some
    late_hour = [r for r in clean if r[1] == "oil_temp_f" and r[2] == T0 + timedelta(hours=10)]
    assert late_hour and all(r[3] == 9 for r in late_hour)
    assert any(r[2] == T0 + timedelta(hours=30) for r in clean)
