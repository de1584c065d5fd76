"""The pipeline's ETL activities heartbeat for as long as their stage runs (the heartbeat
timeout is 5 minutes, and one statement of a long catch-up takes longer), and stop afterwards;
``etl_begin`` and ``etl_end`` record the run and hand the changed hours to the rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.etl import EtlActivities, changed_hours
from altaviz.core import db
from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet
from altaviz.core.payloads import EtlEndRequest, EtlStageRequest, EtlStageResult
from altaviz.core.settings import Settings
from etl.models import SilverResult
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


def test_a_stage_activity_heartbeats_its_progress_and_classifies_failures() -> None:
    """Each ETL stage activity beats with its stage's name and progress while it runs; a
    terminal error (bad input, a configuration error) is not retried."""

    def stage(name: str, run_id: str, progress: Callable[[str, float], None]) -> BaseModel:
        if run_id == "bad":
            raise InputError("landing file of an unknown organization")
        progress(name, 0.5)
        time.sleep(0.4)
        return SilverResult(rows_in=12, late=2, quarantined={"null_required": 1})

    beats: list[tuple[Any, ...]] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)
    acts = EtlActivities(db_url="postgresql://unused", stages=stage, heartbeat_s=0.05)
    result = env.run(acts.etl_silver, EtlStageRequest(run_id="r1"))
    assert result.stage == "silver" and not result.retried
    assert result.counts == {"rows_in": 12, "rows_quarantined": 1, "rows_late": 2,
                             "duplicates": 0, "quarantined:null_required": 1}
    assert beats[0] == ("silver", 0.0) and ("silver", 0.5) in beats
    with pytest.raises(ApplicationError) as failed:
        env.run(acts.etl_silver, EtlStageRequest(run_id="bad"))
    assert failed.value.non_retryable and failed.value.type == "InputError"


def test_etl_end_records_the_run_and_takes_the_recorded_hours(db_url: str,
                                                              fleet: Fleet) -> None:
    """``etl_end`` finishes the run ``etl_begin`` recorded and returns the hours the
    aggregates stage left for the rules, however old (a backlog 30 hours back is evaluated
    whole); a failed run is recorded as failed."""
    acts = EtlActivities(db_url=db_url, stages=lambda *_: SilverResult())
    env = ActivityEnvironment()
    hour = T0 + timedelta(hours=30)
    for run_id in ("ok", "broken"):
        env.run(acts.etl_begin, EtlStageRequest(run_id=run_id))
        env.run(acts.etl_begin, EtlStageRequest(run_id=run_id))   # a retry: no second row
    with db.connect(db_url) as conn, db.admin(conn):
        conn.execute("INSERT INTO etl_unevaluated_hours (org_id, first_hour, last_hour, run_id) "
                     "VALUES ('acme', %s, %s, 'ok')", [T0, T0 + timedelta(hours=29)])
    stages = [EtlStageResult(stage="bronze", counts={"files": 3}),
              EtlStageResult(stage="aggregates", counts={"hours_upserted": 40})]
    summary = env.run(acts.etl_end, EtlEndRequest(run_id="ok", hour=hour, stages=stages))
    assert summary.ran and summary.run_id == "ok"
    assert summary.changed_hours == [T0, T0 + timedelta(hours=29)]
    # a retry of the same activity (same key) reads the hours it took again; another
    # reader does not see them any more
    again = env.run(acts.etl_end, EtlEndRequest(run_id="ok", hour=hour, stages=stages))
    assert again.changed_hours == [T0, T0 + timedelta(hours=29)]
    failed = env.run(acts.etl_end, EtlEndRequest(run_id="broken", hour=hour,
                                                 error="silver: disk full"))
    assert not failed.ran and failed.changed_hours == []
    # the next reader (another key) finds nothing left and clears the taken rows
    assert changed_hours(db_url, hour, [], False) == []
    with db.connect(db_url) as conn, db.admin(conn):
        runs = conn.execute("SELECT run_id, status, files, hours_upserted, error "
                            "FROM etl_runs ORDER BY run_id").fetchall()
        left = conn.execute("SELECT count(*) FROM etl_unevaluated_hours").fetchone()
    assert runs == [("broken", "failed", 0, 0, "silver: disk full"),
                    ("ok", "succeeded", 3, 40, None)]
    assert left == (0,)
