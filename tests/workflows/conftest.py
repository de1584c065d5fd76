"""Fixtures of the alert workflow tests: one time-skipping Temporal test server for the session
(with the pydantic data converter and Altaviz's search attributes registered), a fresh task
queue per test, a real PostgreSQL database with the two-tenant fleet, and a recording stand-in
for the sibling ``notify`` activity (the real one sends Apprise messages; these tests are about
the lifecycle, so they count the calls instead).
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.holds import HoldActivities
from activities.pipeline import start_or_update_alert
from altaviz.core.payloads import (
    Breach,
    Clear,
    DeliveryOutcome,
    DeliveryPlan,
    DeliveryTarget,
    NotifyRequest,
    NotifyResult,
    PlannedContact,
)
from tests.conftest import start_time_skipping_env
from workflows.alert import AlertWorkflow, alert_workflow_id
from workflows.notify import NotifyStepWorkflow


@pytest.fixture(scope="session")
async def wf_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, shared by the session."""
    env = await start_time_skipping_env()
    yield env
    await env.shutdown()


@dataclass
class NotifyRecorder:
    """Stand-in for the notification activities: records every step planned (in worker
    memory) and delivers it to one imaginary recipient."""

    calls: list[NotifyRequest] = field(default_factory=list)
    deliveries: list[DeliveryTarget] = field(default_factory=list)

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Record the request (a retried call is recorded again, as a real one is retried)."""
        self.calls.append(req)
        return NotifyResult(delivered=1, recipients=[req.audience])

    @activity.defn(name="plan_notification")
    async def plan_notification(self, req: NotifyRequest) -> DeliveryPlan:
        """Record the step; plan it for one recipient on one channel."""
        self.calls.append(req)
        who = PlannedContact(contact_id=req.audience, role="technician", channels=["test"])
        return DeliveryPlan(recipients=[who], levels={"technician": [who]},
                            chain=["technician"])

    @activity.defn(name="deliver")
    async def deliver(self, target: DeliveryTarget) -> DeliveryOutcome:
        self.deliveries.append(target)
        return DeliveryOutcome()

    def all(self) -> list[Any]:
        return [self.plan_notification, self.deliver]

    def steps(self, alert_id: str | None = None) -> list[str]:
        return [c.step for c in self.calls if alert_id is None or c.alert.alert_id == alert_id]


#: Let in-flight activities finish when a test stops its worker: the test server keeps its
#: clock frozen for an activity that a stopped worker never completed, which would hang the
#: next test's sleeps.
GRACEFUL: dict[str, Any] = {"graceful_shutdown_timeout": timedelta(seconds=10)}


@dataclass
class Rig:
    """Everything one test needs to run alerts: client, queue, database, recorder."""

    env: WorkflowEnvironment
    task_queue: str
    pool: ConnectionPool[Any]
    notifier: NotifyRecorder
    db_url: str
    started: list[str] = field(default_factory=list)

    @property
    def client(self) -> Client:
        return self.env.client

    def worker(self, **extra: Any) -> Worker:
        """A worker for this test's queue (use as ``async with``)."""
        acts = AlertActivities(self.pool)
        return Worker(
            self.client, task_queue=self.task_queue,
            workflows=[AlertWorkflow, NotifyStepWorkflow, *extra.pop("workflows", [])],
            activities=[acts.open_alert, acts.record_transition, acts.record_transitions,
                        acts.record_delivery_failure,
                        HoldActivities(self.pool).check_silence,
                        *self.notifier.all(), *extra.pop("activities", [])],
            activity_executor=ThreadPoolExecutor(4), **{**GRACEFUL, **extra})

    @asynccontextmanager
    async def running(self, **options: Any) -> AsyncIterator[Worker]:
        """A running worker; on leaving, first let the server settle (see :meth:`settle`)."""
        async with self.worker(**options) as w:
            yield w
            await self.settle()

    async def settle(self) -> None:
        """Wait until no workflow or activity task is outstanding.

        The test server's clock stands still while any task is outstanding, so a one-second
        sleep on it returns only once everything in flight has been processed. Stopping a
        worker before that can leave a task the server never forgets (its clock then stays
        frozen for the following tests, even after the workflow is terminated).
        """
        await self.env.sleep(timedelta(seconds=1))

    async def breach(self, b: Breach, reminder_minutes: int = 0,
                     max_history_events: int = 5000) -> WorkflowHandle[Any, Any]:
        handle = await start_or_update_alert(
            self.client, b, task_queue=self.task_queue, reminder_minutes=reminder_minutes,
            max_history_events=max_history_events)
        self.started.append(handle.id)
        return handle

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
async def rig(wf_env: WorkflowEnvironment, db_url: str, fleet: Any) -> AsyncIterator[Rig]:
    """A fresh task queue and database (with the two-tenant fleet) for one test.

    Alert workflow ids are derived from (org, compressor, rule), so they repeat across tests
    on the shared server: every workflow a test left running is terminated afterwards, or the
    next test's breach would signal it instead of starting its own.
    """
    pool: ConnectionPool[Any] = ConnectionPool(db_url, min_size=1, max_size=4, open=True)
    rig = Rig(wf_env, f"tq-{uuid.uuid4().hex[:12]}", pool, NotifyRecorder(), db_url)
    try:
        yield rig
    finally:
        wids = set(rig.started) | _every_alert_id_of_the_fleet()
        with contextlib.suppress(Exception):
            wids |= {r[0] for r in rig.rows("SELECT DISTINCT workflow_id FROM alert_history")}
        for wid in sorted(wids):
            with contextlib.suppress(RPCError):
                await wf_env.client.get_workflow_handle(wid).terminate("test finished")
        pool.close()


@functools.cache
def _every_alert_id_of_the_fleet() -> frozenset[str]:
    """Every possible alert workflow id of the test fleet (the pipeline may start any of them,
    and one still opening when a test ends has no alert_history row yet)."""
    from rules.loader import load_rule_set
    from tests.conftest import two_tenant_fleet

    rules = [r.id for r in load_rule_set().rules] + ["discharge_temp_high"]
    return frozenset(alert_workflow_id(c.org_id, c.compressor_id, r)
                     for c in two_tenant_fleet().compressors for r in rules)


HOUR0 = datetime(2026, 3, 2, 10, tzinfo=UTC)


def make_breach(hour: datetime = HOUR0, *, severity: str = "warning", value: float = 352.0,
                org: str = "acme", compressor: str = "COMP-0001", site: str = "PB-01",
                rule: str = "discharge_temp_high", delay: float = 4.0,
                rule_version: int | None = 1) -> Breach:
    """A breach of the discharge temperature rule (rule version 1 unless told otherwise)."""
    return Breach(org_id=org, compressor_id=compressor, site_id=site, rule_id=rule,
                  metric="discharge_temp", value=value,
                  threshold=350.0 if severity == "warning" else 375.0,
                  severity=severity,
                  hour=hour, rule_version=rule_version, escalation_delay_hours=delay)


def make_clear(hour: datetime, *, org: str = "acme", compressor: str = "COMP-0001",
               rule: str = "discharge_temp_high") -> Clear:
    """The clear of that rule (hysteresis already satisfied by the evaluator)."""
    return Clear(org_id=org, compressor_id=compressor, rule_id=rule, metric="discharge_temp",
                 value=300.0, hour=hour, rule_version=1)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
