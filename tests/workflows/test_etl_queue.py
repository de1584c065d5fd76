"""The ETL stages run on their own task queue: an escalation fires on time while a long ETL
stage runs.

Real time on the Temporal dev server (the time-skipping server stops its clock while any
activity runs, so it cannot show a timer firing during one): an alerts worker and an ETL worker
in this process, as ``altaviz up`` runs them, the pipeline's silver stage deliberately slow
(heartbeating), and an alert opened while it runs with an escalation delay of a few seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.pipeline import start_or_update_alert
from altaviz.app.temporal_setup import ensure_search_attributes
from altaviz.core.fleet import Fleet
from altaviz.core.payloads import (
    DeliveryOutcome,
    DeliveryPlan,
    DeliveryTarget,
    NotifyRequest,
    NotifyResult,
    PipelineInput,
    PipelineResult,
    PlannedContact,
)
from altaviz.core.settings import Settings, etl_queue_of
from tests.conftest import find_executable_or_skip
from tests.workflows.conftest import GRACEFUL, HOUR0, make_breach
from tests.workflows.test_replay import stand_in_stage
from worker import build_etl_worker, build_worker, rules_evaluator
from workflows.pipeline import PipelineWorkflow

#: How long the slow stage runs, and the alert's escalation delay (seconds): the escalation
#: is due well inside the stage.
STAGE_S = 20.0
ESCALATION_S = 4.0
#: How late the escalation's notification may be (a workflow task, a local activity and an
#: activity on two shared cores).
LATE_S = 3.0


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_executable_or_skip("temporal"), ui=False)
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


@dataclass
class SlowEtl:
    """ETL stages that load nothing, silver taking :data:`STAGE_S`; records when and on
    which task queue each ran."""

    silver_started: threading.Event = field(default_factory=threading.Event)
    ran: dict[str, tuple[float, float, str]] = field(default_factory=dict)

    def stage(self, stage: str, run_id: str, progress: Callable[[str, float], None]
              ) -> BaseModel:
        start = time.monotonic()
        if stage == "silver":
            self.silver_started.set()
            while time.monotonic() - start < STAGE_S:
                progress(stage, (time.monotonic() - start) / STAGE_S)
                time.sleep(0.1)
        result = stand_in_stage(stage, run_id, progress)
        self.ran[stage] = (start, time.monotonic(), activity.info().task_queue)
        return result


@dataclass
class Notified:
    """Stand-in notify activity: when each step of each alert was notified."""

    at: dict[tuple[str, str], float] = field(default_factory=dict)

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Alerts started before notification steps became child workflows call this."""
        self.at.setdefault((req.alert.alert_id, req.step), time.monotonic())
        return NotifyResult(delivered=1, recipients=[req.audience])

    @activity.defn(name="plan_notification")
    async def plan_notification(self, req: NotifyRequest) -> DeliveryPlan:
        """A notification step starts: when it is planned is when it was due."""
        self.at.setdefault((req.alert.alert_id, req.step), time.monotonic())
        return DeliveryPlan(recipients=[PlannedContact(
            contact_id="probe", role="technician", channels=["test"])])

    @activity.defn(name="deliver")
    async def deliver(self, target: DeliveryTarget) -> DeliveryOutcome:
        return DeliveryOutcome()

    def all(self) -> list[Any]:
        return [self.notify, self.plan_notification, self.deliver]


async def test_an_escalation_fires_on_time_while_a_long_etl_stage_runs(
        dev_server: WorkflowEnvironment, db_url: str, fleet: Fleet) -> None:
    client = dev_server.client
    queue = f"alerts-{uuid.uuid4().hex[:8]}"
    etl = SlowEtl()
    notified = Notified()
    with ConnectionPool(db_url, min_size=1, max_size=4, open=True) as pool, \
            ThreadPoolExecutor(max_workers=4) as executor:
        alerts = build_worker(client, task_queue=queue, pool=pool, notify=notified.all(),
                              evaluator=rules_evaluator(Settings()), executor=executor,
                              **GRACEFUL)
        etl_worker = build_etl_worker(client, task_queue=etl_queue_of(queue), db_url=db_url,
                                      stages=etl.stage, heartbeat_s=1.0, **GRACEFUL)
        async with alerts, etl_worker:
            pipeline = await client.start_workflow(
                PipelineWorkflow.run, PipelineInput(hour=HOUR0, reminder_minutes=0),
                id=f"pipeline-{queue}", task_queue=queue)
            assert await asyncio.to_thread(etl.silver_started.wait, 60), "silver never ran"
            breach = make_breach(HOUR0, delay=ESCALATION_S / 3600)
            opened = time.monotonic()
            alert = await start_or_update_alert(client, breach, task_queue=queue,
                                                reminder_minutes=0)
            while not any(step == "escalated" for _, step in notified.at) \
                    and time.monotonic() - opened < STAGE_S + 30:
                await asyncio.sleep(0.05)
            result = await pipeline.result()
            assert isinstance(result, PipelineResult)
            await alert.terminate("test finished")

    escalated = [at for (_, step), at in notified.at.items() if step == "escalated"]
    assert escalated, f"no escalation; notified {sorted(notified.at)}"
    silver_start, silver_end, _ = etl.ran["silver"]
    late = escalated[0] - (opened + ESCALATION_S)
    print(f"escalation notified {late:+.2f} s after it was due, "
          f"{escalated[0] - silver_start:.1f} s into a {STAGE_S:.0f} s ETL stage")
    assert -0.5 <= late <= LATE_S, f"escalated {late:+.1f} s after it was due"
    assert silver_start < escalated[0] < silver_end, "the stage was not running meanwhile"
    # every stage ran on the ETL queue, then the pipeline evaluated the hour
    assert {q for _, _, q in etl.ran.values()} == {etl_queue_of(queue)}
    assert list(etl.ran) == ["bronze", "silver", "gold", "aggregates", "quality"]
    assert result.etl is not None and result.etl.ran and result.organizations == 2
