"""The pipeline's ETL activity heartbeats for as long as the ETL runs (its heartbeat timeout
is 5 minutes, and one statement of a long catch-up takes longer), and stops afterwards."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import ActivityEnvironment

from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from tests.etl.landing import T0, series, write_landing
from worker import etl_runner


def test_etl_activity_heartbeats_while_the_etl_runs(tmp_path: Path, db_url: str,
                                                    fleet: Fleet) -> None:
    landing = tmp_path / "landing"
    write_landing(landing, series("COMP-0001", T0, 6), T0 + timedelta(hours=6, minutes=5),
                  org="acme")
    settings = Settings(data_dir=tmp_path / "data", landing_dir=landing)
    beats: list[tuple[float, tuple[Any, ...]]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append((time.monotonic(), details))
    started = time.monotonic()
    summary = env.run(etl_runner(settings, db_url, heartbeat_s=0.05), T0 + timedelta(hours=5))
    finished = time.monotonic()
    assert summary.ran and summary.changed_hours
    # one beat per 0.05 s of a run that takes a second or more, all while it ran
    assert len(beats) >= min(3, int((finished - started) / 0.05) // 2), (finished - started)
    assert all(started <= at <= finished for at, _ in beats)
    assert beats[0][1] == ("etl running",)
    count = len(beats)
    time.sleep(0.3)
    assert len(beats) == count, "the heartbeat thread outlived the ETL run"
