"""Quality runs beside the aggregates stage in a small (hourly) run, and its freshness does not
depend on the aggregates stage having moved the watermarks first."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import etl.pipeline
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline, run_stage
from tests.etl.landing import T0, series, write_landing


def _freshness(conn: psycopg.Connection[Any], run_id: str) -> dict[str, tuple[float, bool]]:
    with conn.transaction():
        rows = conn.execute("SELECT compressor_id, measured, passed FROM data_quality_checks "
                            "WHERE check_type = 'freshness' AND run_id = %s", [run_id]
                            ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_freshness_counts_the_batch_before_the_watermarks_move(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    """Quality right after silver (aggregates not yet run, no watermark exists) still measures
    every compressor of the batch from its latest reading."""
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5), org="acme")
    write_landing(settings.landing_path, series("COMP-0003", T0, 1),
                  T0 + timedelta(hours=2, minutes=5), org="bravo")
    for stage in ("bronze", "silver"):
        run_stage(stage, settings, db_url)
    as_of = T0 + timedelta(hours=2)
    run_stage("quality", settings, db_url, run_id="q1", as_of=as_of)
    with conn.transaction():
        assert conn.execute("SELECT count(*) FROM etl_watermarks").fetchone() == (0,)
    # last readings: 01:50 (10 minutes before as_of) and 00:50 (70 minutes, over the SLA)
    assert _freshness(conn, "q1") == {"COMP-0001": (10.0, True), "COMP-0003": (70.0, False)}


def test_quality_runs_beside_aggregates_in_a_small_run(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """In a run under the child-process threshold, quality runs on its own thread while the
    aggregates stage runs; a bulk run keeps one stage at a time."""
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5), org="acme")
    quality_started = threading.Event()
    overlapped: list[bool] = []
    threads: dict[str, str] = {}
    real_quality, real_upsert = etl.pipeline.quality_checks, etl.pipeline.upsert_aggregates

    def quality(*args: Any, **kwargs: Any) -> Any:
        threads["quality"] = threading.current_thread().name
        quality_started.set()
        return real_quality(*args, **kwargs)

    def upsert(*args: Any, **kwargs: Any) -> Any:
        threads["aggregates"] = threading.current_thread().name
        # sequential stages would never get here with quality started: the wait times out
        overlapped.append(quality_started.wait(timeout=20))
        return real_upsert(*args, **kwargs)

    monkeypatch.setattr(etl.pipeline, "quality_checks", quality)
    monkeypatch.setattr(etl.pipeline, "upsert_aggregates", upsert)
    seen: list[tuple[str, float]] = []
    summary = run_pipeline(settings, db_url, as_of=T0 + timedelta(hours=2),
                           progress=lambda s, f: seen.append((s, f)))
    assert overlapped == [True]
    assert threads["quality"].startswith("etl-quality")
    assert threads["aggregates"] == threading.main_thread().name
    assert summary.rows_in == 12 and summary.hours_upserted > 0
    # quality reports its start once silver is done and its end after the aggregates stage
    order = [s for s, f in seen if f in (0.0, 1.0)]
    assert order.index("quality") < order.index("aggregates")
    assert seen[-1] == ("quality", 1.0)
    assert _freshness(conn, summary.run_id) == {"COMP-0001": (10.0, True)}

    # a bulk run (every stage over the threshold) runs quality after aggregates, in a child
    write_landing(settings.landing_path, series("COMP-0001", T0 + timedelta(hours=2), 1),
                  T0 + timedelta(hours=3, minutes=5), org="acme")
    quality_started.clear()
    overlapped.clear()
    bulk = settings.model_copy(update={"etl_child_process_rows": 0})
    with caplog.at_level("INFO", logger="etl.pipeline"):
        again = run_pipeline(bulk, db_url, as_of=T0 + timedelta(hours=3, minutes=5))
    children = [r.getMessage().split()[2].rstrip(":") for r in caplog.records
                if "child process" in r.getMessage()]
    assert children == ["bronze", "silver", "gold", "aggregates", "quality"]
    assert _freshness(conn, again.run_id) == {"COMP-0001": (15.0, True)}
