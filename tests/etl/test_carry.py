"""Rows carried from stage to stage in one run (etl/carry.py): the hourly run's aggregates
stage, given gold's rows and silver's latest readings in memory, writes exactly what it
writes when it reads them back from the lake, on both of its paths (new hours COPYed, hours
PostgreSQL already has upserted); carried rows serve only the batches they were written
for; and rows a crashed run left in the staging table are never upserted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

import etl.aggregates
from altaviz.core.settings import Settings
from altaviz.core.telemetry import METRICS
from etl.carry import Carried, Carry
from etl.models import EtlRunReport
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, reading, write_landing
from tests.etl.test_handoff import COMPRESSORS, _second_lake


def _first_load(landing: Path) -> None:
    """Hours 0-29 of four compressors; COMP-0004 (organization bravo) is silent in hours
    27-29, so gold holds none of its rows from hour 27 on."""
    for k in range(30):
        rows = [reading(c, T0 + timedelta(hours=k, minutes=10 * i),
                        oil_temp_f=150.0 + k % 7 + i + 7 * n)
                for n, c in enumerate(COMPRESSORS)
                if not (c == "COMP-0004" and k >= 27) for i in range(6)]
        write_landing(landing, rows, T0 + timedelta(hours=k + 1, minutes=5))


def _next_hour(landing: Path, late: bool) -> None:
    """Hour 30 of all four (an outlier on COMP-0002); with ``late``, COMP-0004's hour 28
    arriving with it: PostgreSQL has bravo's hour 28 already (COMP-0003's), so that row takes
    the upsert path while hour 30 is COPYed."""
    rows = [reading(c, T0 + timedelta(hours=30, minutes=10 * i),
                    oil_temp_f=280.0 if (c, i) == ("COMP-0002", 3) else 152.0 + i + 7 * n)
            for n, c in enumerate(COMPRESSORS) for i in range(6)]
    rows += [reading("COMP-0004", T0 + timedelta(hours=28, minutes=10 * i),
                     oil_temp_f=171.0 + i) for i in range(6) if late]
    write_landing(landing, rows, T0 + timedelta(hours=31, minutes=5))


def _postgres(db_url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every aggregate row (all statistics) and every watermark's last reading."""
    with psycopg.connect(db_url) as c:
        aggs = c.execute(
            "SELECT org_id, compressor_id, hour, n, mean, min, max, stddev, mean_4h, min_4h, "
            "max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, "
            "outliers, late FROM agg_compressor_hours ORDER BY org_id, hour, compressor_id"
        ).fetchall()
        marks = c.execute("SELECT org_id, compressor_id, last_reading_at FROM etl_watermarks "
                          "ORDER BY 1, 2").fetchall()
    return aggs, marks


def _hourly(settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch, *,
            carried: bool, late: bool) -> tuple[EtlRunReport, list[str]]:
    """A first load, then the next hour's run with or without the carried rows; that run's
    summary and what its aggregates stage was handed ("gold", "latest") and coded in Arrow
    ("coded")."""
    _first_load(settings.landing_path)
    run_pipeline(settings, db_url)
    taken: list[str] = []
    take_gold, take_latest = Carry.take_gold, Carry.take_latest

    def gold(self: Carry, *args: Any) -> pa.Table | None:
        table = take_gold(self, *args) if carried else None
        taken.extend(["gold"] if table is not None else [])
        return table

    def latest(self: Carry, *args: Any) -> pa.Table | None:
        table = take_latest(self, *args) if carried else None
        taken.extend(["latest"] if table is not None else [])
        return table

    def codes(*args: Any) -> pa.Table:
        taken.append("coded")
        return carried_codes(*args)

    carried_codes = etl.aggregates._carried_codes
    monkeypatch.setattr(etl.aggregates, "_carried_codes", codes)
    monkeypatch.setattr(Carry, "take_gold", gold)
    monkeypatch.setattr(Carry, "take_latest", latest)
    _next_hour(settings.landing_path, late)
    summary = run_pipeline(settings, db_url)
    monkeypatch.undo()
    return summary, taken


@pytest.mark.parametrize("late", [False, True], ids=["new-hour", "with-late-hour"])
def test_carried_rows_write_what_reading_the_lake_back_writes(
        settings: Settings, db_url: str, fleet: Any, tmp_path: Path, pg_server: Any,
        monkeypatch: pytest.MonkeyPatch, late: bool) -> None:
    """Without ``late`` every row is new and is coded in Arrow; with it, the carried rows
    are split between the COPY and the upsert by DuckDB's join to the keys."""
    summary, taken = _hourly(settings, db_url, monkeypatch, carried=True, late=late)
    assert taken == ["gold", "latest", *([] if late else ["coded"])], taken
    other, url = _second_lake(settings, tmp_path, pg_server)
    read, taken = _hourly(other, url, monkeypatch, carried=False, late=late)
    assert taken == []

    aggs, marks = _postgres(db_url)
    assert (aggs, marks) == _postgres(url)
    assert summary.changed == read.changed and summary.hours_upserted == read.hours_upserted
    hour30 = T0 + timedelta(hours=30)
    written = {(c.compressor_id, c.first_hour, c.last_hour) for c in summary.changed}
    assert written == {(c, hour30, hour30) for c in COMPRESSORS[:3]} | {
        ("COMP-0004", T0 + timedelta(hours=28) if late else hour30, hour30)}
    rows = {(r[1], r[2]): r for r in aggs}
    assert (("COMP-0004", T0 + timedelta(hours=28)) in rows) == late
    assert ("COMP-0004", T0 + timedelta(hours=29)) not in rows
    oil = next(i for i, m in enumerate(METRICS) if m.name == "oil_temp_f")
    assert rows[("COMP-0002", hour30)][3][oil] == 6     # n: the outlier is counted
    assert rows[("COMP-0002", hour30)][6][oil] == 280.0  # max
    assert rows[("COMP-0002", hour30)][17][oil] == 1     # outliers
    assert dict((r[1], r[2]) for r in marks)["COMP-0004"] == hour30 + timedelta(minutes=50)


def test_carried_rows_serve_only_their_own_batches(tmp_path: Path) -> None:
    lake, other = tmp_path / "lake", tmp_path / "other"
    lake.mkdir()
    other.mkdir()
    table = pa.table({"x": [1]})
    carry = Carry(gold=Carried(lake, 3, 5, table), latest=Carried(lake, 3, 5, table))
    assert carry.take_gold(lake, 3, 5) is table
    assert carry.take_gold(lake, 3, 5) is None, "taken twice"
    for where, after, upto in ((other, 3, 5), (lake, 4, 5), (lake, 3, 6), (lake, 2, 5)):
        carry.latest = Carried(lake, 3, 5, table)
        assert carry.take_latest(where, after, upto) is None, (where, after, upto)
        assert carry.latest is None, "a carried value that did not fit was kept"
    # the same folder by another path
    carry.gold = Carried(lake, 3, 5, table)
    assert carry.take_gold(tmp_path / "other" / ".." / "lake", 3, 5) is table


def test_rows_a_crashed_run_left_staged_are_never_upserted(
        settings: Settings, db_url: str, fleet: Any, conn: psycopg.Connection[Any]) -> None:
    """The staging table is emptied before a run stages anything, though it is only
    truncated when it holds rows (etl.aggregates._empty_staging)."""
    _first_load(settings.landing_path)
    run_pipeline(settings, db_url)
    hour5 = T0 + timedelta(hours=5)
    before = _postgres(db_url)[0]
    with conn.transaction():
        conn.execute("INSERT INTO etl_agg_staging (org_id, compressor_id, hour, n, mean, "
                     "outliers, late) VALUES ('acme', 'COMP-0001', %s, array_fill(6, "
                     "ARRAY[24]), array_fill(999.0::float8, ARRAY[24]), array_fill(0, "
                     "ARRAY[24]), array_fill(0, ARRAY[24]))", [hour5])
    _next_hour(settings.landing_path, late=False)
    run_pipeline(settings, db_url)
    after = _postgres(db_url)[0]
    assert [r for r in after if r[2] == hour5] == [r for r in before if r[2] == hour5]
    assert len(after) == len(before) + 4
    with conn.transaction():
        assert conn.execute("SELECT count(*) FROM etl_agg_staging").fetchone() == (0,)
