"""Between stages the pipeline gives memory back: a stage's DuckDB connection is closed once
the process holds more than ``reconnect_above_bytes`` (a DuckDB instance keeps what a stage's
scans allocated until it closes, so a week's first load stacked gold's peak on silver's
leftovers); below it the connection is kept, with its temp tables dropped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb
import pytest

from altaviz.core import duck
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import STAGES, release_memory, run_pipeline
from etl.thresholds import Thresholds
from tests.etl.landing import T0, series, write_landing


@pytest.mark.parametrize(("threshold", "connections"), [(0, len(STAGES)), (1 << 50, 1)],
                         ids=["over-the-threshold", "under-it"])
def test_stage_connections_are_closed_over_the_threshold(
        settings: Settings, db_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
        threshold: int, connections: int) -> None:
    """Every stage's connection is the one kept or a new one after the last closed, with
    ``etl_threads`` threads."""
    import etl.pipeline

    opened: list[duckdb.DuckDBPyConnection] = []
    threads: set[int | None] = set()
    connect = duck.connect

    def tracked(**kwargs: Any) -> duckdb.DuckDBPyConnection:
        # every earlier stage connection is closed by the time the next one opens
        for con in opened:
            with pytest.raises(duckdb.ConnectionException):
                con.execute("SELECT 1")
        con = connect(**kwargs)
        opened.append(con)
        threads.add(kwargs.get("threads"))
        return con

    monkeypatch.setattr(etl.pipeline.duck, "connect", tracked)
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5))
    summary = run_pipeline(settings.model_copy(update={"etl_threads": 3}), db_url,
                           thresholds=Thresholds(reconnect_above_bytes=threshold))
    assert summary.rows_in == 12 and summary.hours_upserted > 0
    assert len(opened) == connections
    assert threads == {3}
    with pytest.raises(duckdb.ConnectionException):   # the run closes what it opened
        opened[-1].execute("SELECT 1")


def test_a_kept_connection_loses_its_temp_tables_and_stays_usable() -> None:
    con = duck.connect()
    try:
        con.execute("CREATE TEMP TABLE classified AS SELECT range AS x FROM range(100000)")
        con.execute('CREATE TEMP TABLE "odd ""name""" AS SELECT 1 AS y')
        con.execute("CREATE TABLE agg_existing AS SELECT 1 AS z")   # not temp: kept
        assert release_memory(con, above_bytes=1 << 50) is False
        temp = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()
        kept = con.execute("SELECT count(*) FROM agg_existing").fetchone()
        assert temp == (0,) and kept == (1,)
    finally:
        con.close()


_LIMIT = "SELECT current_setting('memory_limit')"


def _record_limits(monkeypatch: pytest.MonkeyPatch, module: Any, names: list[str],
                   seen: dict[str, str]) -> None:
    """Wrap ``module.<name>`` (each taking a DuckDB connection first) to record in ``seen``
    the DuckDB memory limit it was called under, as DuckDB spells it."""

    def recording(name: str, run: Any) -> Any:
        def wrapped(con: duckdb.DuckDBPyConnection, *args: Any, **kwargs: Any) -> Any:
            row = con.execute(_LIMIT).fetchone()
            seen[name] = row[0] if row else ""
            return run(con, *args, **kwargs)
        return wrapped

    for name in names:
        monkeypatch.setattr(module, name, recording(name, getattr(module, name)))


def _spelled(mb: int) -> str:
    """How DuckDB spells a memory limit of ``mb`` MB."""
    con = duck.connect(memory_limit=f"{mb}MB")
    try:
        row = con.execute(_LIMIT).fetchone()
        return row[0] if row else ""
    finally:
        con.close()


def test_a_bulk_gold_runs_under_its_share_of_the_memory_limit(
        settings: Settings, db_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gold on the hour grid (a bulk load) lowers DuckDB's limit for itself (DuckDB holds on
    to what it freed, up to the limit) and gives the next stages, on the same connection, the
    full limit back."""
    import etl.gold
    import etl.pipeline

    seen: dict[str, str] = {}
    _record_limits(monkeypatch, etl.gold, ["gold_batches"], seen)
    _record_limits(monkeypatch, etl.pipeline, ["upsert_aggregates", "quality_checks"], seen)
    settings = settings.model_copy(update={"etl_memory_mb": 1500})
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5))
    # one connection, and the bulk path
    run_pipeline(settings, db_url,
                 thresholds=Thresholds(reconnect_above_bytes=1 << 50, join_max_hours=0))
    assert seen == {"gold_batches": _spelled(1500 * etl.gold.GRID_MEMORY_SHARE // 100),
                    "upsert_aggregates": _spelled(1500), "quality_checks": _spelled(1500)}
    assert seen["gold_batches"] != seen["upsert_aggregates"]
