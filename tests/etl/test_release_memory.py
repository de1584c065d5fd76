"""Each pipeline stage runs on its own DuckDB connection, closed before the next stage starts:
a DuckDB instance keeps what a stage's scans allocated until it closes, so a week's first load
otherwise stacked gold's peak on silver's leftovers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb
import pytest

from altaviz.fleet import Fleet
from altaviz.settings import Settings
from etl import duck
from etl.pipeline import STAGES, run_pipeline
from tests.etl.landing import T0, series, write_landing


def test_every_stage_gets_a_fresh_connection_closed_before_the_next(
        settings: Settings, db_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    import etl.pipeline

    opened: list[duckdb.DuckDBPyConnection] = []
    connect = duck.connect

    def tracked(**kwargs: Any) -> duckdb.DuckDBPyConnection:
        # every earlier connection is closed by the time the next one opens
        for con in opened:
            with pytest.raises(duckdb.ConnectionException):
                con.execute("SELECT 1")
        con = connect(**kwargs)
        opened.append(con)
        return con

    monkeypatch.setattr(etl.pipeline.duck, "connect", tracked)
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5))
    summary = run_pipeline(settings, db_url)
    assert summary.rows_in == 12 and summary.hours_upserted > 0
    assert len(opened) == len(STAGES)
    with pytest.raises(duckdb.ConnectionException):
        opened[-1].execute("SELECT 1")
