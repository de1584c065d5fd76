"""Alerts survive workers going away: timers, queued acknowledgements, continue-as-new."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

from temporalio.client import WorkflowExecutionStatus

from altaviz.core.payloads import AckRequest, AlertState
from tests.workflows.conftest import HOUR0, Rig, hours, make_breach
from workflows.alert import QUERY_STATE, UPDATE_ACK

ALERTS = [dict(org="acme", compressor="COMP-0001", site="PB-01"),
          dict(org="acme", compressor="COMP-0002", site="PB-01"),
          dict(org="bravo", compressor="COMP-0003", site="EF-01")]


@asynccontextmanager
async def late_worker(rig: Rig, duration, delay_s: float = 1.0):
    """Sleep on the server clock while no worker runs, then start one after ``delay_s``.

    The test server freezes its clock while a workflow task waits for a worker, so the sleep
    only completes once the new worker has processed what the timers made due. The worker
    that is stopped runs without a workflow cache (``max_cached_workflows=0``): with one, the
    server would first offer the next task to the stopped worker's sticky queue and wait for a
    timeout on the very clock that is frozen. (Without a cache a local activity's result
    arrives after its workflow was evicted, costing a 10-second workflow-task timeout per
    opening: slow, but only in this test. The new worker keeps its cache.)
    """
    sleeper = asyncio.create_task(rig.env.sleep(duration))
    await asyncio.sleep(delay_s)
    assert not sleeper.done()
    async with rig.running():
        await sleeper
        await rig.env.sleep(hours(0.1))
        yield


async def test_worker_restart_every_alert_escalates_once(rig: Rig):
    async with rig.running(max_cached_workflows=0):
        handles = [await rig.breach(make_breach(**a)) for a in ALERTS]  # type: ignore[arg-type]
        await rig.env.sleep(hours(1))
    # No worker from here: the 4-hour timers fire on the server while nobody polls.
    async with late_worker(rig, hours(5)):
        states = [await h.query(QUERY_STATE, result_type=AlertState) for h in handles]
    for s in states:
        assert s.severity == "critical" and s.escalated_at is not None
        assert abs((s.escalated_at - s.opened_at) - hours(4)) < hours(0.01)
    assert sorted(rig.notifier.steps()).count("escalated") == 3
    assert rig.rows("SELECT count(*) FROM alert_events WHERE event_type = 'escalated'") == [(3,)]
    assert rig.rows("SELECT count(*) FROM alert_history WHERE severity = 'critical'") == [(3,)]


async def test_signal_ack_without_worker_applies_when_a_worker_returns(rig: Rig):
    async with rig.running(max_cached_workflows=0):
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(1))
        opened = await handle.query(QUERY_STATE, result_type=AlertState)
    # The web server's fallback: a signal is accepted with no worker running.
    req = AckRequest(org_id="acme", by="tech.jane", channel="link",
                     request_id=uuid.uuid4().hex, requested_at=opened.opened_at + hours(2))
    await handle.signal("ack_requested", req)
    async with late_worker(rig, hours(6)):
        s = await handle.query(QUERY_STATE, result_type=AlertState)
    assert s.state == "acknowledged" and s.acknowledged_by == "tech.jane"
    assert s.acknowledged_at == req.requested_at and s.ack_channel == "link"
    assert s.severity == "warning" and s.escalated_at is None
    assert "escalated" not in rig.notifier.steps()


async def test_long_lived_alert_continues_as_new_with_its_state(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach(severity="critical", value=380),
                                  max_history_events=60)
        first = await handle.describe()
        for i in range(1, 12):
            await rig.breach(make_breach(HOUR0 + hours(i), severity="critical", value=380 + i),
                             max_history_events=60)
            await rig.env.sleep(hours(0.05))
        s = await handle.query(QUERY_STATE, result_type=AlertState)
        latest = await rig.client.get_workflow_handle(handle.id).describe()
        assert latest.run_id != first.run_id
        assert latest.status == WorkflowExecutionStatus.RUNNING
        assert s.value == 391 and s.breach_hour == HOUR0
        acked = await rig.client.get_workflow_handle(handle.id).execute_update(
            UPDATE_ACK, AckRequest(org_id="acme", by="tech", request_id="a1"),
            result_type=AlertState)
    assert acked.state == "acknowledged" and acked.alert_id == s.alert_id
    seqs = [r[0] for r in rig.rows(
        "SELECT (details->>'seq')::int FROM alert_events ORDER BY event_id")]
    assert seqs == list(range(1, len(seqs) + 1))  # numbering continued across runs
    assert rig.rows("SELECT count(*) FROM alert_history") == [(1,)]
    assert rig.notifier.steps() == ["opened"]


async def test_resumed_critical_alert_keeps_reminding(rig: Rig):
    """A warning escalated to critical, its workflow terminated and started again by the next
    breach (the row is still open, so the new run resumes it): reminders go on, numbered after
    those already sent, on the cadence counted from the escalation."""
    async with rig.running():
        first = await rig.breach(make_breach(), reminder_minutes=60)
        await rig.env.sleep(hours(5.5))        # escalated at 4 h, reminder-1 at 5 h
        await first.terminate(reason="operator")
        resumed = await rig.breach(make_breach(), reminder_minutes=60)  # its hour evaluated again
        await rig.env.sleep(hours(2.2))        # reminder-2 at 6 h, reminder-3 at 7 h
        s = await resumed.query(QUERY_STATE, result_type=AlertState)
        await resumed.execute_update(
            UPDATE_ACK, AckRequest(org_id="acme", by="tech", request_id="a1"),
            result_type=AlertState)
    assert s.severity == "critical"
    assert rig.rows("SELECT alert_id FROM alert_history") == [(s.alert_id,)]
    assert rig.notifier.steps() == ["opened", "escalated", "reminder-1", "reminder-2",
                                    "reminder-3"]
    assert rig.rows("SELECT count(*) FROM alert_events WHERE event_type = 'reminder'") == [(3,)]
