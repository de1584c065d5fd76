"""PostgreSQL stopped for ten (simulated) minutes while an alert waits on its escalation: the
alert escalates and notifies on time, an acknowledgement link works during the outage, and once
PostgreSQL is back ``alert_history`` and ``alert_events`` hold every transition exactly once,
in order; the workflow's history stays small while the database is away.

Everything is real: a PostgreSQL 18 this test owns (``OwnedPostgres``: ``pg_ctl stop -m fast``
and ``start`` on the same port), the time-skipping Temporal test server (ten minutes of the
alert's time pass in seconds), the worker's activities and the web app's acknowledgement route
served by uvicorn. Only the notification step's ``plan_notification``/``deliver`` are
stand-ins that record when they were asked (real delivery reads contacts from PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.holds import HoldActivities
from activities.pipeline import start_or_update_alert
from altaviz.app.web import create_app
from altaviz.core import db
from altaviz.core.fleet_store import load_fleet
from altaviz.core.links import LinkSigner
from altaviz.core.payloads import (
    AlertEventType,
    AlertState,
    AlertTransition,
    DeliveryOutcome,
    DeliveryPlan,
    DeliveryTarget,
    NotifyRequest,
    PlannedContact,
)
from tests.conftest import start_time_skipping_env, two_tenant_fleet
from tests.notify.receivers import free_port
from tests.reliability.conftest import OwnedPostgres, admin_rows
from tests.web.conftest import serve
from tests.workflows.conftest import make_breach
from workflows.alert import (
    SA_SEVERITY,
    SA_STATE,
    AlertWorkflow,
    alert_workflow_id,
    initial_state,
)
from workflows.notify import NotifyStepWorkflow

T = TypeVar("T")
SECRET = b"projection-outage-link-secret-0123456789"
ESCALATION = timedelta(minutes=6)
OUTAGE = timedelta(minutes=10)
#: The alert workflow's history may grow by at most this many events during the outage
#: (before: about 1,300 an hour of workflow-task heartbeats from local activities retrying).
CEILING = 200
#: Wall-clock bound of each step: the old code never got past the escalation's write.
STEP_S = 45.0


@dataclass
class StepClock:
    """Stand-in for the notification activities: the step and the (server) time it was
    scheduled, which is the alert's own clock."""

    steps: list[tuple[str, datetime]] = field(default_factory=list)

    @activity.defn(name="plan_notification")
    async def plan_notification(self, req: NotifyRequest) -> DeliveryPlan:
        self.steps.append((req.step, activity.info().scheduled_time))
        who = PlannedContact(contact_id="tech-a", role="technician", channels=["test"])
        return DeliveryPlan(recipients=[who], levels={"technician": [who]},
                            chain=["technician"])

    @activity.defn(name="deliver")
    async def deliver(self, target: DeliveryTarget) -> DeliveryOutcome:
        return DeliveryOutcome()

    def when(self, step: str) -> datetime | None:
        return next((at for s, at in self.steps if s == step), None)


async def bounded(what: str, step: Awaitable[T]) -> T:
    """``step`` within :data:`STEP_S` seconds of wall time, or a failure naming it."""
    try:
        return await asyncio.wait_for(step, STEP_S)
    except TimeoutError:
        raise AssertionError(f"{what}: not done within {STEP_S:.0f} s (blocked on "
                             "PostgreSQL?)") from None


async def poll(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(pred):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
        await asyncio.sleep(0.2)


def _events(url: str) -> list[tuple[Any, ...]]:
    return admin_rows(url, "SELECT event_type, (details->>'seq')::int, occurred_at, event_key "
                           "FROM alert_events ORDER BY (details->>'seq')::int, occurred_at")


def _wait_for_pool(pool: ConnectionPool[Any]) -> None:
    with pool.connection(timeout=30) as conn:
        conn.execute("SELECT 1")


async def _history_length(handle: WorkflowHandle[Any, Any]) -> int:
    return len((await handle.fetch_history()).events)


@pytest.mark.parametrize("max_events", [5000, 45], ids=["one-run", "continued-as-new"])
async def test_pg_down_ten_minutes_escalation_ack_and_catch_up_exactly_once(
        tmp_path: Path, max_events: int) -> None:
    """With ``max_events`` 45 the workflow continues as new during the outage, its outbox
    still unwritten: the new run carries it, and nothing waits for the database."""
    pg = OwnedPostgres(tmp_path / "pg")
    pg.init()
    pg.start()
    env = await start_time_skipping_env()
    pool: ConnectionPool[Any] | None = None
    figures: dict[str, Any] = {}
    wall = time.monotonic()
    try:
        url = pg.create_database("altaviz")
        with db.connect(url) as conn:
            load_fleet(conn, two_tenant_fleet())
        pool = ConnectionPool(url, min_size=1, max_size=4, open=True)
        clock = StepClock()
        # one second for a connection: the bounded activities fail fast while the server is
        # down, which keeps the frozen-clock seconds of the time-skipping server few
        acts = AlertActivities(pool, connect_wait=1.0)
        queue = "projection-outage"
        worker = Worker(
            env.client, task_queue=queue, workflows=[AlertWorkflow, NotifyStepWorkflow],
            activities=[acts.open_alert, acts.record_transition, acts.record_transitions,
                        acts.record_delivery_failure,
                        HoldActivities(pool, connect_wait=1.0).check_silence,
                        clock.plan_notification, clock.deliver],
            activity_executor=ThreadPoolExecutor(4),
            graceful_shutdown_timeout=timedelta(seconds=10))

        async def temporal() -> Client:
            return env.client

        signer = LinkSigner(SECRET)
        port = free_port()
        app = create_app(database_url=url, signer=signer, temporal=temporal, ack_timeout=5.0)
        server, served = await serve(app, port)
        try:
            async with worker, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                                 timeout=30) as http:
                t0 = await env.get_current_time()
                first = await start_or_update_alert(
                    env.client, make_breach(delay=ESCALATION / timedelta(hours=1)),
                    task_queue=queue, reminder_minutes=0, max_history_events=max_events)
                handle = env.client.get_workflow_handle(first.id)   # the latest run
                first_run = (await handle.describe()).run_id
                await bounded("opening", env.sleep(timedelta(seconds=30)))
                await poll(lambda: [e[0] for e in _events(url)] == ["opened"], 20,
                           "the opening written")
                state = await handle.query("state", result_type=AlertState)

                # --- PostgreSQL stops; the alert is waiting on its escalation -------------
                pg.stop("fast")
                down_at = await env.get_current_time()
                length_at_stop = await _history_length(handle)
                await bounded("escalation during the outage",
                              env.sleep(t0 + ESCALATION + timedelta(minutes=1) - down_at))
                escalated = clock.when("escalated")
                assert escalated is not None, f"no escalation notification: {clock.steps}"
                late = escalated - (state.opened_at + ESCALATION)
                figures["escalation_notified_late_s"] = late.total_seconds()
                assert timedelta(0) <= late < timedelta(seconds=60), late
                desc = await handle.describe()
                sa = desc.typed_search_attributes
                assert (sa.get(SA_SEVERITY), sa.get(SA_STATE)) == ("critical", "open")

                # an acknowledgement link, with the web app's database down as well
                token = signer.issue(org_id="acme", alert_id=state.alert_id,
                                     contact_id="tech-a", action="ack")
                t_ack = time.monotonic()
                page = await bounded("acknowledgement link", http.post(f"/ack/{token}"))
                figures["ack_link_s"] = round(time.monotonic() - t_ack, 2)
                assert page.status_code == 200, page.text
                assert "Acknowledged" in page.text and "Thank you" in page.text
                acked = await handle.query("state", result_type=AlertState)
                assert (acked.state, acked.acknowledged_by, acked.ack_channel) == (
                    "acknowledged", "tech-a", "link")
                desc = await handle.describe()
                assert desc.typed_search_attributes.get(SA_STATE) == "acknowledged"

                await bounded("the rest of the outage",
                              env.sleep(down_at + OUTAGE - await env.get_current_time()))
                assert not pg.running()
                length_at_restart = await _history_length(handle)
                continued = (await handle.describe()).run_id != first_run
                if max_events > CEILING:
                    assert not continued
                    figures["history_events_during_outage"] = length_at_restart - length_at_stop
                    assert length_at_restart - length_at_stop < CEILING, figures
                else:
                    # continued as new with the escalation and the acknowledgement unwritten
                    assert continued
                figures["history_length_at_restart"] = length_at_restart

                # --- PostgreSQL is back: the outbox catches up, in order, once ------------
                pg.start()
                # minutes of real time would pass here: the pool reconnects in its own time
                # (its back-off is on the wall clock, which the test server does not skip)
                await asyncio.to_thread(_wait_for_pool, pool)
                up_at = await env.get_current_time()
                want = ["opened", "escalated", "acknowledged"]
                for _ in range(40):
                    if [e[0] for e in _events(url)] == want:
                        break
                    await bounded("catch-up", env.sleep(timedelta(seconds=15)))
                figures["catch_up_simulated_s"] = (
                    await env.get_current_time() - up_at).total_seconds()
                await bounded("settle", env.sleep(timedelta(minutes=10)))
                events = _events(url)
                rows = admin_rows(url, "SELECT state, seq, acknowledged_by FROM alert_history")
                history = await handle.fetch_history()
                figures["flush_failures"] = sum(
                    1 for e in history.events
                    if e.HasField("activity_task_failed_event_attributes")
                    or e.HasField("activity_task_timed_out_event_attributes"))
                await handle.terminate("test over")
        finally:
            server.should_exit = True
            await served
    finally:
        if pool is not None:
            pool.close()
        await env.shutdown()
        pg.close()

    assert [e[0] for e in events] == want, events
    assert [e[1] for e in events] == [1, 2, 3]
    assert len({e[3] for e in events}) == 3
    occurred = [e[2] for e in events]
    assert occurred == sorted(occurred)
    assert down_at <= occurred[1] <= down_at + OUTAGE     # escalated during the outage
    assert down_at <= occurred[2] <= down_at + OUTAGE     # and acknowledged during it
    assert rows == [("acknowledged", 3, "tech-a")]
    assert figures["flush_failures"] >= 1, figures
    figures["wall_s"] = round(time.monotonic() - wall, 1)
    print("projection outage:", figures)



def test_a_flush_written_twice_is_written_once_and_a_refused_row_is_skipped(
        db_url: str, fleet: Any) -> None:
    """The flush of an outbox batch that committed but never reported back is sent again (by
    the retry, or by the next run after continue-as-new): each transition is written once. A
    transition the database refuses for good is logged and skipped, and the rest of the batch
    is written: the alert goes on either way."""
    breach = make_breach()
    wid = alert_workflow_id(breach.org_id, breach.compressor_id, breach.rule_id)
    now = datetime(2026, 3, 2, 11, 5, tzinfo=UTC)
    state = initial_state(breach, wid, now)

    def step(seq: int, event: AlertEventType, **changes: Any) -> AlertTransition:
        return AlertTransition(state=state.model_copy(update=changes), seq=seq,
                               event_type=event, occurred_at=now + timedelta(minutes=seq),
                               actor="test", run_id="run-1")

    batch = [step(1, "opened"), step(2, "escalated", severity="critical"),
             step(3, "acknowledged", severity="critical", ack_state="acknowledged",
                  state="acknowledged", acknowledged_by="tech.jane")]
    stranger = make_breach(compressor="COMP-9999")     # no such compressor: refused (FK)
    refused = AlertTransition(
        state=initial_state(stranger, alert_workflow_id("acme", "COMP-9999", stranger.rule_id),
                            now), seq=1, event_type="opened", occurred_at=now)
    env = ActivityEnvironment()
    with ConnectionPool(db_url, min_size=1, max_size=2, open=True) as pool:
        acts = AlertActivities(pool)
        assert env.run(acts.record_transitions, batch[:2]) == 2
        assert env.run(acts.record_transitions, batch) == 3        # the first two again
        assert env.run(acts.record_transitions, [refused, *batch]) == 3
    events = admin_rows(db_url, "SELECT event_type FROM alert_events "
                                "ORDER BY (details->>'seq')::int")
    assert events == [("opened",), ("escalated",), ("acknowledged",)]
    assert admin_rows(db_url, "SELECT state, severity, seq FROM alert_history") == [
        ("acknowledged", "critical", 3)]
