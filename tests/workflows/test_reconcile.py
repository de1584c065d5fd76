"""The alert reconciler against real workflows and PostgreSQL: an alert whose workflow an
operator terminated is closed on the reconciler's next run (with an event saying why) and the
next breach opens a clean alert; a running alert that lost its row gets it back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.reconcile import ReconcileActivities
from altaviz.app.temporal_setup import ensure_search_attributes
from altaviz.core.payloads import AlertState, ReconcileResult
from tests.conftest import find_executable_or_skip
from tests.workflows.conftest import HOUR0, NotifyRecorder, Rig, hours, make_breach
from workflows.alert import QUERY_STATE
from workflows.reconcile import ReconcileWorkflow


async def _reconcile(rig: Rig) -> ReconcileResult:
    return await rig.client.execute_workflow(
        ReconcileWorkflow.run, id=f"reconcile-{uuid.uuid4().hex[:8]}",
        task_queue=rig.task_queue)


def _extra(rig: Rig) -> dict[str, Any]:
    acts = ReconcileActivities(client=rig.client, pool=rig.pool)
    return {"workflows": [ReconcileWorkflow], "activities": [acts.reconcile_alerts]}


async def test_terminated_workflow_is_closed_and_the_next_breach_opens_clean(rig: Rig):
    async with rig.running(**_extra(rig)):
        first = await rig.breach(make_breach())
        await rig.env.sleep(hours(0.1))
        old = (await first.query(QUERY_STATE, result_type=AlertState)).alert_id
        await first.terminate(reason="operator cleanup")
        result = await _reconcile(rig)
        again = await _reconcile(rig)
        second = await rig.breach(make_breach(HOUR0 + hours(2)))
        await rig.env.sleep(hours(0.1))
        new = await second.query(QUERY_STATE, result_type=AlertState)
    assert result.closed == [old] and result.checked == 1
    assert again.closed == [] and again.checked == 0
    assert new.alert_id != old and new.state == "open"
    assert rig.rows("SELECT alert_id, state, resolved_by FROM alert_history "
                    "ORDER BY breach_hour") == [(old, "resolved", "reconciler"),
                                                (new.alert_id, "open", None)]
    [(actor, details)] = rig.rows(
        "SELECT actor, details FROM alert_events WHERE event_type = 'reconciled'")
    assert actor == "reconciler" and details["repair"] == "closed"
    assert "terminated" in details["reason"]
    assert rig.notifier.steps(new.alert_id) == ["opened"]


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server: the reconciler lists running workflows (visibility), which the
    time-skipping server does not offer."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=find_executable_or_skip("temporal"), ui=False)
    await ensure_search_attributes(env.client)
    yield env
    await env.shutdown()


async def test_running_alert_without_a_row_is_reattached(
        dev_server: WorkflowEnvironment, db_url: str, fleet: Any):
    pool: ConnectionPool[Any] = ConnectionPool(db_url, min_size=1, max_size=4, open=True)
    rig = Rig(dev_server, f"tq-{uuid.uuid4().hex[:12]}", pool, NotifyRecorder(), db_url)
    try:
        async with rig.worker(**_extra(rig)):
            h = await rig.breach(make_breach())
            deadline = time.monotonic() + 20
            while not rig.rows("SELECT 1 FROM alert_history") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            s = await h.query(QUERY_STATE, result_type=AlertState)
            with rig.pool.connection() as conn:   # a database restored from an older backup
                conn.execute("SET LOCAL session_replication_role = replica")  # no triggers
                conn.execute("DELETE FROM alert_events")
                conn.execute("DELETE FROM alert_history")
            result = await _reconcile(rig)
            again = await _reconcile(rig)
            await h.terminate("test over")
        rows = rig.rows("SELECT alert_id, state, seq FROM alert_history")
        events = rig.rows("SELECT actor FROM alert_events WHERE event_type = 'reconciled'")
    finally:
        pool.close()
    assert result.closed == [] and result.reattached == [s.alert_id]
    assert again.reattached == [] and again.checked == 1
    assert rows == [(s.alert_id, "open", 0)]
    assert events == [("reconciler",)]
