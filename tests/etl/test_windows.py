"""Golden values of the window features (computed here from the raw readings with the
statistics module, independently of the ETL's hourly partials), late data and tenant scoping."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from deltalake import DeltaTable

from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from etl.thresholds import Thresholds
from tests.etl.landing import T0, reading, write_landing
from tests.etl.oracles import FEATURES, window_features


def hour_values(k: int) -> list[float]:
    return [100.0 + 3 * k + i * (1 + k % 2) for i in range(6)]


def agg(conn: psycopg.Connection[Any], metric: str) -> dict[datetime, tuple[Any, ...]]:
    with conn.transaction():
        rows = conn.execute(
            "SELECT hour, n, mean, min, max, stddev, mean_4h, min_4h, max_4h, stddev_4h, "
            "mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, updated_at "
            "FROM sensor_readings_agg WHERE compressor_id = 'COMP-0001' AND metric = %s",
            [metric]).fetchall()
    return {r[0]: r[1:] for r in rows}


@pytest.mark.parametrize("thresholds", [
    Thresholds(),                                  # a few hours: each joined to its partials
    Thresholds(join_max_hours=0),                  # a bulk load: windows on the hour grid
], ids=["join", "grid"])
def test_golden_window_features(settings: Settings, db_url: str, fleet: Fleet,
                                conn: psycopg.Connection[Any], thresholds: Thresholds) -> None:
    hours = [0, 1, 2, 3, 4, 6, 30]      # hour 5 missing, hour 30 alone in its 24 h window
    rows = [reading("COMP-0001", T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=v)
            for k in hours for i, v in enumerate(hour_values(k))]
    write_landing(settings.landing_path, rows, T0 + timedelta(hours=31))
    run_pipeline(settings, db_url, thresholds=thresholds)
    got = agg(conn, "oil_temp_f")
    assert sorted(got) == [T0 + timedelta(hours=k) for k in hours]

    def window(k: int, span: int) -> list[float]:
        return [v for h in hours if k - span < h <= k for v in hour_values(h)]

    for k in hours:
        one, four, day = hour_values(k), window(k, 4), window(k, 24)
        prev = statistics.fmean(hour_values(k - 1)) if k - 1 in hours else None
        expected = (6, statistics.fmean(one), min(one), max(one), statistics.stdev(one),
                    statistics.fmean(four), min(four), max(four), statistics.stdev(four),
                    statistics.fmean(day), min(day), max(day), statistics.stdev(day),
                    None if prev is None else statistics.fmean(one) - prev)
        actual = got[T0 + timedelta(hours=k)][:-1]
        assert actual[0] == expected[0]
        for a, e in zip(actual[1:], expected[1:], strict=True):
            assert (a is None) == (e is None), (k, actual, expected)
            if e is not None:
                assert a == pytest.approx(e, rel=1e-9, abs=1e-9), (k, actual, expected)
    # spot checks written out by hand: hour 6's 4 h window holds hours 3, 4 and 6
    assert got[T0 + timedelta(hours=6)][5] == pytest.approx(
        statistics.fmean(hour_values(3) + hour_values(4) + hour_values(6)))
    assert got[T0 + timedelta(hours=1)][13] == pytest.approx(108.0 - 102.5)  # per hour
    assert got[T0 + timedelta(hours=6)][13] is None                      # hour 5 has no readings


def test_late_batch_updates_exactly_the_affected_hours(settings: Settings, db_url: str,
                                                       fleet: Fleet,
                                                       conn: psycopg.Connection[Any]) -> None:
    on_time = [reading("COMP-0001", T0 + timedelta(hours=k, minutes=10 * i))
               for k in range(30) if k != 5 for i in range(6)]
    write_landing(settings.landing_path, on_time, T0 + timedelta(hours=30, minutes=5))
    run_pipeline(settings, db_url)
    before = {m: agg(conn, m) for m in ("oil_temp_f", "speed_rpm")}
    # hour 5 arrives a day late, with a hotter oil temperature
    late = [reading("COMP-0001", T0 + timedelta(hours=5, minutes=10 * i), oil_temp_f=200.0)
            for i in range(6)]
    write_landing(settings.landing_path, late, T0 + timedelta(days=1, hours=6))
    summary = run_pipeline(settings, db_url)
    assert summary.rows_late == 6
    after = {m: agg(conn, m) for m in ("oil_temp_f", "speed_rpm")}
    changed = {m: sorted(int((h - T0) / timedelta(hours=1)) for h, r in after[m].items()
                         if h not in before[m] or before[m][h][:-1] != r[:-1]) for m in after}
    # PostgreSQL rewrote exactly the compressor-hours where some metric changed (one row per
    # compressor-hour, migration 070): its updated_at moved there and nowhere else
    touched = sorted(int((h - T0) / timedelta(hours=1)) for h, r in after["speed_rpm"].items()
                     if h not in before["speed_rpm"] or before["speed_rpm"][h][-1] != r[-1])
    assert touched == list(range(5, 29))
    # oil temperature: the late hour plus the 23 hours whose 4 h / 24 h windows contain it
    assert changed["oil_temp_f"] == list(range(5, 29))
    # a constant channel: the new hour, and hour 6 whose rate of change now has a previous
    # hour (null before, 0 now); its 4 h / 24 h values did not change, so no later hour did
    assert changed["speed_rpm"] == [5, 6]
    assert [(c.compressor_id, c.first_hour, c.last_hour) for c in summary.changed] == [
        ("COMP-0001", T0 + timedelta(hours=5), T0 + timedelta(hours=28))]
    assert after["oil_temp_f"][T0 + timedelta(hours=29)] == before["oil_temp_f"][
        T0 + timedelta(hours=29)]


def test_aggregates_are_scoped_by_organization(settings: Settings, db_url: str, fleet: Fleet,
                                               conn: psycopg.Connection[Any]) -> None:
    from altaviz.core.db import ETL_ROLE, queries, tenant

    rows = [reading(c, T0 + timedelta(minutes=10 * i))
            for c in ("COMP-0001", "COMP-0003") for i in range(6)]
    write_landing(settings.landing_path, rows, T0 + timedelta(hours=1, minutes=5))
    run_pipeline(settings, db_url)
    with conn.transaction():
        owners = conn.execute("SELECT DISTINCT org_id, compressor_id FROM sensor_readings_agg "
                              "ORDER BY 1").fetchall()
    assert owners == [("acme", "COMP-0001"), ("bravo", "COMP-0003")]
    with tenant(conn, "acme"):
        seen = conn.execute("SELECT DISTINCT compressor_id FROM sensor_readings_agg").fetchall()
    assert seen == [("COMP-0001",)]
    # a staged row of another organization is invisible to acme's upsert ...
    stage = ("INSERT INTO etl_agg_staging (org_id, compressor_id, hour, n, outliers, late) "
             "VALUES (%s, %s, %s, '{1}', '{0}', '{0}')")
    with conn.transaction():
        conn.execute(stage, ["bravo", "COMP-0004", T0])
    with tenant(conn, "acme", role=ETL_ROLE):
        assert conn.execute(queries("etl")["upsert_aggregates"]).fetchall() == []
    # ... and a row claiming acme owns bravo's compressor is refused by the database
    with conn.transaction():
        conn.execute("TRUNCATE etl_agg_staging")
        conn.execute(stage, ["acme", "COMP-0003", T0 + timedelta(hours=2)])
    with pytest.raises(psycopg.errors.ForeignKeyViolation), tenant(conn, "acme",
                                                                   role=ETL_ROLE):
        conn.execute(queries("etl")["upsert_aggregates"])


def _load(landing: Path) -> None:
    """30 hours of four compressors, hour 5 missing."""
    rows = [reading(c, T0 + timedelta(hours=k, minutes=10 * i),
                    oil_temp_f=150.0 + k + i + 7 * n)
            for n, c in enumerate(("COMP-0001", "COMP-0002", "COMP-0003", "COMP-0004"))
            for k in range(30) if k != 5 for i in range(6)]
    write_landing(landing, rows, T0 + timedelta(hours=30, minutes=5))


def _late(landing: Path) -> None:
    """A day late: hour 5 of two compressors, and two readings added to hour 20 of a third."""
    rows = [reading(c, T0 + timedelta(hours=5, minutes=10 * i), oil_temp_f=200.0)
            for c in ("COMP-0001", "COMP-0004") for i in range(6)]
    rows += [reading("COMP-0002", T0 + timedelta(hours=20, minutes=5 + 10 * i),
                     oil_temp_f=190.0) for i in range(2)]
    write_landing(landing, rows, T0 + timedelta(days=1, hours=6))


def _next_hour(landing: Path) -> None:
    """Hour 30 of the four compressors."""
    rows = [reading(c, T0 + timedelta(hours=30, minutes=10 * i), oil_temp_f=180.0 + i)
            for c in ("COMP-0001", "COMP-0002", "COMP-0003", "COMP-0004")
            for i in range(6)]
    write_landing(landing, rows, T0 + timedelta(days=1, hours=7))


def _configured(settings: Settings, knobs: dict[str, int]) -> tuple[Settings, Thresholds]:
    """``settings`` and thresholds with ``knobs`` set: settings fields (``etl_*``) in the
    settings, the rest in the thresholds."""
    fields = {k: v for k, v in knobs.items() if k in Settings.model_fields}
    return (settings.model_copy(update=fields),
            Thresholds(**{k: v for k, v in knobs.items() if k not in fields}))


def _all_rows(c: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with c.transaction():
        return c.execute(
            "SELECT org_id, compressor_id, metric, hour, n, mean, min, max, stddev, "
            "mean_4h, min_4h, max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, "
            "rate_of_change, outliers, late FROM sensor_readings_agg "
            "ORDER BY org_id, compressor_id, metric, hour").fetchall()


def test_gold_features_equal_window_functions_over_its_partials(
        settings: Settings, db_url: str, fleet: Fleet) -> None:
    """Gold's features from a bulk load on the hour grid, then a late batch merged and two
    hourly runs (by the default methods), equal DuckDB's window functions over gold's own
    hourly partials (tests/etl/oracles.py)."""
    _load(settings.landing_path)
    run_pipeline(settings, db_url, thresholds=Thresholds(join_max_hours=0, hot_hours=0))
    _late(settings.landing_path)
    run_pipeline(settings, db_url)
    _next_hour(settings.landing_path)
    run_pipeline(settings, db_url)
    # and an hour whose mean jumps far beyond its trailing spread (a spike)
    write_landing(settings.landing_path,
                  [reading("COMP-0001", T0 + timedelta(hours=31, minutes=10 * i),
                           oil_temp_f=300.0) for i in range(6)],
                  T0 + timedelta(days=1, hours=8))
    run_pipeline(settings, db_url)
    expected = window_features(settings.lake_path)
    gold = DeltaTable(str(settings.lake_path / "gold")).to_pyarrow_table(
        columns=["compressor_id", "metric", "hour", *FEATURES, "flags"]).to_pylist()
    assert len(gold) == len(expected) > 4 * 31 * 15
    for row in gold:
        key = (row["compressor_id"], row["metric"], row["hour"])
        want = expected[key]
        assert row["flags"] == want[-1], (key, row, want)
        for name, e in zip(FEATURES, want[:-1], strict=True):
            a = row[name]
            assert (a is None) == (e is None), (key, name, row, want)
            if e is not None:
                assert a == pytest.approx(e, rel=1e-9, abs=1e-6), (key, name, row, want)
    flagged = {f for v in expected.values() for f in v[-1]}
    assert {"late", "spike"} <= flagged, flagged


@pytest.mark.parametrize(("many", "one"), [
    # one bucket per dirty compressor-hour vs one bucket
    ({"etl_bucket_hours": 20}, {"etl_bucket_hours": 10**9}),
    # windows and baselines by join vs window functions
    ({"join_max_hours": 10**9}, {"join_max_hours": 0}),
    # recent partials from the hot cache vs from gold, by join (the hourly run's method) ...
    ({"hot_hours": 48}, {"hot_hours": 0}),
    # ... and by window functions (a day's catch-up)
    ({"hot_hours": 48, "join_max_hours": 0}, {"hot_hours": 0, "join_max_hours": 0}),
    # new hours pushed to PostgreSQL by two parallel COPY streams vs one
    ({"etl_copy_streams": 2}, {"etl_copy_streams": 1}),
    # a bulk load's baselines on the dense hour grid (etl.windows) vs DuckDB's window
    # functions (over the grid's size cap)
    ({"join_max_hours": 0, "hot_hours": 0},
     {"join_max_hours": 0, "hot_hours": 0, "grid_max_hours": 0}),
], ids=["buckets", "join-vs-window", "hot-join", "hot-window", "copy-streams",
        "grid-vs-window-functions"])
def test_compressor_buckets_give_the_same_rows(settings: Settings, db_url: str, fleet: Fleet,
                                               conn: psycopg.Connection[Any], tmp_path: Path,
                                               pg_server: Any, many: dict[str, int],
                                               one: dict[str, int]) -> None:
    """Gold (and so PostgreSQL) computed one compressor bucket at a time equals the result of
    one bucket: buckets must never cut a compressor's windows. Likewise, the windows computed
    by joining each output row to its 24 h of partials (the hourly run's method) equal those of
    window functions, and the hourly run's windows and baselines from the hot partials cache
    (etl.hot) equal those from gold. Covers the streaming first load, the compare-and-merge
    path of a late batch (a missing hour filled, readings added to an hour the next hour's
    windows reach) and the next hour's run."""
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import _fresh_database, two_tenant_fleet

    many_settings, many_thresholds = _configured(settings, many)
    _load(settings.landing_path)
    first = run_pipeline(many_settings, db_url, thresholds=many_thresholds)
    _late(settings.landing_path)
    second = run_pipeline(many_settings, db_url, thresholds=many_thresholds)
    _next_hour(settings.landing_path)
    third = run_pipeline(many_settings, db_url, thresholds=many_thresholds)
    bucketed = _all_rows(conn)
    one_url = _fresh_database(pg_server, "altaviz_test_template")
    one_settings, one_thresholds = _configured(settings.model_copy(update={
        "lake_dir": tmp_path / "one_bucket_lake", "landing_dir": tmp_path / "one_landing"}),
        one)
    _load(one_settings.landing_path)
    with psycopg.connect(one_url) as one_conn:
        load_fleet(one_conn, two_tenant_fleet())
        one_first = run_pipeline(one_settings, one_url, thresholds=one_thresholds)
        _late(one_settings.landing_path)
        one_second = run_pipeline(one_settings, one_url, thresholds=one_thresholds)
        _next_hour(one_settings.landing_path)
        one_third = run_pipeline(one_settings, one_url, thresholds=one_thresholds)
        single = _all_rows(one_conn)
    assert [r[:5] + r[-2:] for r in single] == [r[:5] + r[-2:] for r in bucketed]
    for a, b in zip(single, bucketed, strict=True):
        # the same partials summed in another order: equal to rounding (a constant channel's
        # standard deviation is pure rounding noise of sumsq - sum^2/n)
        for x, y in zip(a[5:-2], b[5:-2], strict=True):
            assert (x is None) == (y is None), (a, b)
            if x is not None:
                assert x == pytest.approx(y, rel=1e-9, abs=1e-6), (a, b)
    assert len(bucketed) > 4 * 30 * 15  # 4 compressors x 30 hours x the metrics they report
    assert first.hours_upserted == one_first.hours_upserted
    assert third.hours_upserted == one_third.hours_upserted > 0
    assert [(c.org_id, c.compressor_id, c.first_hour, c.last_hour, c.rows)
            for c in second.changed] == [
        (c.org_id, c.compressor_id, c.first_hour, c.last_hour, c.rows)
        for c in one_second.changed]
    assert {c.compressor_id for c in second.changed} == {"COMP-0001", "COMP-0002",
                                                        "COMP-0004"}
