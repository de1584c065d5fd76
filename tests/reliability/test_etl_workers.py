"""Two ETL worker processes on one task queue share the pipeline's ETL stages.

Scale-out is Temporal's: several ``altaviz worker --only etl`` processes poll the ETL queue and
each stage activity goes to one of them; the lake's writer lock serializes the stages of one
lake. Real processes throughout: the Temporal dev server (this test's process holds it), one
``altaviz worker --only alerts`` and two ``altaviz worker --only etl`` processes, the test
PostgreSQL. Several pipeline runs at once give both ETL workers work; afterwards the
aggregates equal one uninterrupted ``run_pipeline`` over the same files, every run is recorded
as succeeded, and no alert is doubled.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from altaviz.app.context import App
from altaviz.core import db
from altaviz.core.fleet_store import load_fleet
from altaviz.core.payloads import PipelineInput, PipelineResult
from altaviz.core.settings import load_settings
from etl.pipeline import run_pipeline
from tests.reliability.conftest import admin_rows, clean_env, free_port
from workflows.pipeline import WORKFLOW_NAME

simulator = pytest.importorskip("altaviz.simulator")
AGG = ("SELECT org_id, compressor_id, metric, hour, n, min, max, outliers, late "
       "FROM sensor_readings_agg ORDER BY 1, 2, 3, 4")
PIPELINES = 4


def _worker(env: dict[str, str], only: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "altaviz.app.cli", "worker", "--no-schedule", "--only", only],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_two_etl_worker_processes_share_the_stages(
        tmp_path: Path, db_url: str, pg_server: Any, pg_template: str) -> None:
    from tests.conftest import _fresh_database

    config = simulator.SimulationConfig(compressors=6, days=2, seed=17, out=tmp_path / "sim",
                                        fault_share=0.5)
    sim = simulator.simulate(config)
    reference_url = _fresh_database(pg_server, pg_template)
    for url in (db_url, reference_url):
        with db.connect(url) as conn:
            load_fleet(conn, sim.fleet)
    env = clean_env(ALTAVIZ_DATA_DIR=str(tmp_path / "data"), ALTAVIZ_DATABASE_URL=db_url,
                    ALTAVIZ_LANDING_DIR=str(sim.landing_dir),
                    ALTAVIZ_TEMPORAL_PORT=str(free_port()),
                    ALTAVIZ_TEMPORAL_UI_PORT=str(free_port()),
                    ALTAVIZ_TASK_QUEUE="two-etl-workers",
                    ALTAVIZ_LINK_SECRET="test-secret-for-two-etl-workers-7d1c04e9b2")
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("ALTAVIZ_")})
    app = App(settings=settings)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        client = await app.temporal_client()
        env["ALTAVIZ_TEMPORAL_ADDRESS"] = f"127.0.0.1:{settings.temporal_port}"
        workers = [_worker(env, "alerts"), _worker(env, "etl"), _worker(env, "etl")]
        etl_pids = {w.pid for w in workers[1:]}
        last_hour = config.start + timedelta(days=config.days) - timedelta(hours=1)
        handles = [await client.start_workflow(
            WORKFLOW_NAME, PipelineInput(hour=last_hour - timedelta(hours=i)),
            id=f"pipeline-two-etl-workers-{i}", task_queue=settings.task_queue,
            result_type=PipelineResult) for i in range(PIPELINES)]
        results = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles)), timeout=300)
        # which process ran each ETL stage activity (a worker's identity is pid@host)
        ran_by: Counter[tuple[str, int]] = Counter()
        for h in handles:
            history = await h.fetch_history()
            scheduled: dict[int, str] = {}
            for e in history.events:
                if e.HasField("activity_task_scheduled_event_attributes"):
                    attrs = e.activity_task_scheduled_event_attributes
                    scheduled[e.event_id] = attrs.activity_type.name
                    if attrs.activity_type.name.startswith("etl_"):
                        assert attrs.task_queue.name == settings.etl_queue
                if e.HasField("activity_task_started_event_attributes"):
                    started = e.activity_task_started_event_attributes
                    name = scheduled[started.scheduled_event_id]
                    if name.startswith("etl_"):
                        ran_by[(name, int(started.identity.split("@")[0]))] += 1
        pids = {pid for _, pid in ran_by}
        assert pids == etl_pids, f"stages ran in {pids}, the ETL workers are {etl_pids}"
        assert sum(ran_by.values()) == PIPELINES * 7

        run_pipeline(settings.model_copy(update={"lake_dir": tmp_path / "reference_lake"}),
                     reference_url)
        assert admin_rows(db_url, AGG) == admin_rows(reference_url, AGG)
        runs = admin_rows(db_url, "SELECT status, count(*) FROM etl_runs GROUP BY 1")
        assert runs == [("succeeded", PIPELINES)], runs
        assert all(r.etl is not None and r.etl.ran for r in results)
        assert sum(r.breaches for r in results) > 0
        doubled = admin_rows(db_url, "SELECT alert_id, count(*) FROM alert_events "
                                     "WHERE event_type = 'opened' GROUP BY 1 "
                                     "HAVING count(*) > 1")
        assert doubled == []
        print("two ETL workers: stage activities per process "
              f"{dict(Counter(pid for _, pid in ran_by.elements()))}")
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
                try:
                    w.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.kill()
        app.close()
