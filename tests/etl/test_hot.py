"""The hot partials cache (etl.hot): it always equals gold's partials of the hours it covers,
the hourly run really reads it, and a cache that cannot be trusted is never read."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import etl.gold
from altaviz.core import duck
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.hot import SCHEMA, HotPartials
from etl.lake import Lake
from etl.pipeline import run_pipeline
from etl.thresholds import DEFAULT_THRESHOLDS, Thresholds
from tests.etl.landing import T0, reading, write_landing

COMPRESSORS = ("COMP-0001", "COMP-0002", "COMP-0003", "COMP-0004")


def _cached(root: Path) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """Every cached row by (organization, compressor, hour), from the files the meta says
    are covered."""
    hot = HotPartials(root)
    meta = hot.meta()
    assert meta is not None
    rows: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for path in sorted(hot.root.glob("hour-*.arrow")):
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        assert table.schema.equals(SCHEMA), path
        for row in table.to_pylist():
            key = (row["org_id"], row["compressor_id"], row["hour"])
            assert key not in rows, f"{key} cached twice"
            assert meta.first <= row["hour"] <= meta.last
            rows[key] = row
    return rows


def _assert_cache_equals_gold(lake_root: Path, tmp_path: Path,
                              hours: int = DEFAULT_THRESHOLDS.hot_hours) -> None:
    """The incrementally maintained cache equals one rebuilt from gold alone (``hours``: the
    cache's span)."""
    lake = Lake(lake_root)
    kept = _cached(lake_root)
    fresh_root = tmp_path / "rebuilt"
    (fresh_root / "_hot").mkdir(parents=True, exist_ok=True)
    con = duck.connect()
    try:
        rebuilt = HotPartials(fresh_root, hours)
        # rebuild reads gold through the lake object; write its files elsewhere
        rebuilt.rebuild(con, lake, lake.batch_mark("gold"))
    finally:
        con.close()
    meta, again = HotPartials(lake_root).meta(), HotPartials(fresh_root).meta()
    assert meta is not None and again is not None
    assert (meta.mark, meta.last) == (again.mark, again.last)
    expected = {k: v for k, v in _cached(fresh_root).items() if k[2] >= meta.first}
    assert set(kept) == set(expected)
    for key, row in kept.items():
        for column, value in row.items():
            other = expected[key][column]
            if isinstance(value, float):
                assert value == pytest.approx(other, rel=1e-12), (key, column)
            else:
                assert value == other, (key, column)


def test_cache_follows_gold_and_the_hourly_run_reads_it(
        settings: Settings, db_url: str, fleet: Fleet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[int] = []
    from_cache = etl.gold._Context._hot_context

    def spy(self: Any, *args: Any) -> pa.Table:
        used.append(1)
        return from_cache(self, *args)

    monkeypatch.setattr(etl.gold._Context, "_hot_context", spy)
    landing = settings.landing_path
    rows = [reading(c, T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=150.0 + k + i)
            for c in COMPRESSORS for k in range(30) if k != 5 for i in range(6)]
    write_landing(landing, rows, T0 + timedelta(hours=30, minutes=5))
    run_pipeline(settings, db_url)
    hot = HotPartials(settings.lake_path)
    meta = hot.meta()
    assert meta is not None and meta.last == T0 + timedelta(hours=29)
    assert meta.first == T0 + timedelta(hours=29 - 47)
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "a")
    assert used == []                       # a first load uses window functions

    # late readings: a missing hour filled, readings added to a cached hour
    late = [reading(c, T0 + timedelta(hours=5, minutes=10 * i), oil_temp_f=200.0)
            for c in ("COMP-0001", "COMP-0004") for i in range(6)]
    late += [reading("COMP-0002", T0 + timedelta(hours=20, minutes=5 + 10 * i),
                     oil_temp_f=190.0) for i in range(2)]
    write_landing(landing, late, T0 + timedelta(days=1, hours=6))
    run_pipeline(settings, db_url)
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "b")

    nxt = [reading(c, T0 + timedelta(hours=30, minutes=10 * i), oil_temp_f=180.0 + i)
           for c in COMPRESSORS for i in range(6)]
    write_landing(landing, nxt, T0 + timedelta(days=1, hours=7))
    run_pipeline(settings, db_url)
    assert used == [1]                      # the next hour's windows came from the cache
    meta = hot.meta()
    assert meta is not None and meta.last == T0 + timedelta(hours=30)
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "c")


def _load_six_hours(settings: Settings, db_url: str,
                    thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
    """Hours 0-5 of every compressor, loaded as one batch."""
    rows = [reading(c, T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=150.0 + k)
            for c in COMPRESSORS for k in range(6) for i in range(6)]
    write_landing(settings.landing_path, rows, T0 + timedelta(hours=6, minutes=5))
    run_pipeline(settings, db_url, thresholds=thresholds)


def test_hours_that_leave_the_window_are_deleted(
        settings: Settings, db_url: str, fleet: Fleet, tmp_path: Path) -> None:
    """The cache keeps only its last ``hot_hours`` hours on disk: an hour file older than the
    recorded window is removed when the window moves on (else one file per hour would pile
    up forever, ~4 MB each at fleet size)."""
    four = Thresholds(hot_hours=4)
    _load_six_hours(settings, db_url, four)
    for k in (6, 7):
        write_landing(settings.landing_path,
                      [reading(c, T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=151.0)
                       for c in COMPRESSORS for i in range(6)],
                      T0 + timedelta(hours=k + 1, minutes=5))
        run_pipeline(settings, db_url, thresholds=four)
    hot = HotPartials(settings.lake_path)
    meta = hot.meta()
    assert meta is not None and meta.first == T0 + timedelta(hours=4)
    assert sorted(p.name for p in hot.root.glob("hour-*")) == [
        f"hour-{T0 + timedelta(hours=k):%Y-%m-%dT%H}.arrow" for k in (4, 5, 6, 7)]
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "moved", hours=4)


def test_a_cache_left_behind_by_a_crash_is_never_read(
        settings: Settings, db_url: str, fleet: Fleet, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that dies after touching the cache's files but before recording the new state
    leaves no meta: readers ignore the cache, and the next run rebuilds it from gold."""
    landing = settings.landing_path
    _load_six_hours(settings, db_url)
    hot = HotPartials(settings.lake_path)
    assert hot.meta() is not None

    def crash(self: Any, con: Any, lake: Any, after: int) -> None:
        raise RuntimeError("killed between gold's commit and the cache's meta")

    monkeypatch.setattr("etl.hot.Update.finish", crash)
    write_landing(landing, [reading(c, T0 + timedelta(hours=6, minutes=10 * i),
                                    oil_temp_f=300.0) for c in COMPRESSORS for i in range(6)],
                  T0 + timedelta(hours=7, minutes=5))
    with pytest.raises(RuntimeError):
        run_pipeline(settings, db_url)
    # the staged hour-6 rows are on disk, but nothing vouches for them
    assert hot.meta() is None
    assert hot.usable(Lake(settings.lake_path).batch_mark("gold"), T0) is None
    monkeypatch.undo()
    write_landing(landing, [reading(c, T0 + timedelta(hours=7, minutes=10 * i),
                                    oil_temp_f=151.0) for c in COMPRESSORS for i in range(6)],
                  T0 + timedelta(hours=8, minutes=5))
    run_pipeline(settings, db_url)
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "after")


def test_a_cache_in_another_format_is_stale_and_rebuilt(
        settings: Settings, db_url: str, fleet: Fleet, tmp_path: Path) -> None:
    """A lake whose cache an earlier version wrote (Parquet files, a meta without a format)
    is never read as if its hours were empty: the cache counts as stale, the next run takes
    the gold path, and the cache is rebuilt in the current format."""
    import json

    landing = settings.landing_path
    _load_six_hours(settings, db_url)
    hot = HotPartials(settings.lake_path)
    meta = hot.meta()
    assert meta is not None
    # what an earlier version left: the same state, no format, no .arrow files
    for path in hot.root.glob("hour-*.arrow"):
        path.rename(path.with_suffix(".parquet"))
    (hot.root / "meta.json").write_text(json.dumps(
        {"mark": meta.mark, "first": meta.first.isoformat(), "last": meta.last.isoformat()}))
    assert hot.meta() is None
    write_landing(landing, [reading(c, T0 + timedelta(hours=6, minutes=10 * i),
                                    oil_temp_f=151.0) for c in COMPRESSORS for i in range(6)],
                  T0 + timedelta(hours=7, minutes=5))
    run_pipeline(settings, db_url)
    assert hot.meta() is not None
    assert list(hot.root.glob("hour-*.parquet")) == []
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "rebuilt")
