"""The alert state machine on the time-skipping server against real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from altaviz.core.payloads import AckRequest, AlertState, ResolveRequest
from tests.workflows.conftest import HOUR0, Rig, hours, make_breach, make_clear
from workflows.alert import QUERY_STATE, UPDATE_ACK, UPDATE_RESOLVE, alert_id_for

WID = "alert/acme/COMP-0001/discharge_temp_high"


def ack(by: str = "tech.jane", org: str = "acme", **kw: object) -> AckRequest:
    return AckRequest(org_id=org, by=by, channel="cli", request_id=uuid.uuid4().hex, **kw)


async def state_of(handle) -> AlertState:
    return await handle.query(QUERY_STATE, result_type=AlertState)


def events(rig: Rig, alert_id: str) -> list[str]:
    return [r[0] for r in rig.rows(
        "SELECT event_type FROM alert_events WHERE alert_id = %s ORDER BY event_id", alert_id)]


async def test_unacknowledged_warning_escalates_at_the_delay_and_supervisors_once(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(3.9))
        s = await state_of(handle)
        assert s.severity == "warning" and s.escalated_at is None
        await rig.env.sleep(hours(2))
        s = await state_of(handle)
    assert s.severity == "critical" and s.state == "open"
    assert s.escalated_at is not None
    delta = s.escalated_at - s.opened_at
    assert abs(delta - hours(4)) < timedelta(seconds=2), delta
    supervisors = [c for c in rig.notifier.calls if c.audience == "technicians_and_supervisors"]
    assert [c.step for c in supervisors] == ["escalated"]
    assert rig.notifier.steps() == ["opened", "escalated"]
    assert events(rig, s.alert_id) == ["opened", "escalated"]
    row = rig.rows("SELECT severity, state, escalated_at, seq FROM alert_history "
                   "WHERE alert_id = %s", s.alert_id)
    assert row == [("critical", "open", s.escalated_at, 2)]


async def test_acknowledged_at_three_hours_is_never_promoted(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(3))
        s = await handle.execute_update(UPDATE_ACK, ack(comment="on my way"),
                                        result_type=AlertState)
        assert s.state == "acknowledged" and s.acknowledged_by == "tech.jane"
        await rig.env.sleep(hours(10))
        s = await state_of(handle)
    assert s.severity == "warning" and s.escalated_at is None
    assert s.ack_comment == "on my way" and s.ack_channel == "cli"
    assert rig.notifier.steps() == ["opened"]
    assert events(rig, s.alert_id) == ["opened", "acknowledged"]


async def test_ack_from_another_org_is_rejected_and_changes_nothing(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(1))
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(UPDATE_ACK, ack(org="bravo"), result_type=AlertState)
        assert "organization 'bravo'" in str(err.value.cause)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                UPDATE_RESOLVE, ResolveRequest(org_id="bravo", by="x", reason="mine",
                                               request_id="r1"), result_type=AlertState)
        s = await state_of(handle)
        assert s.ack_state == "unacknowledged" and s.state == "open"
        # The signal path (web fallback) is recorded as rejected and changes nothing either.
        await handle.signal("ack_requested", ack(org="bravo", by="intruder"))
        await rig.env.sleep(hours(5))
        s = await state_of(handle)
    assert s.ack_state == "unacknowledged" and s.severity == "critical"
    assert events(rig, s.alert_id) == ["opened", "ack_rejected", "escalated"]
    actor = rig.rows("SELECT actor, details->>'request_org' FROM alert_events "
                     "WHERE event_type = 'ack_rejected'")
    assert actor == [("intruder", "bravo")]


async def test_ack_of_resolved_alert_is_rejected(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        s = await handle.execute_update(
            UPDATE_RESOLVE, ResolveRequest(org_id="acme", by="sup.bob", reason="sensor swap",
                                           request_id="r1"), result_type=AlertState)
        assert s.state == "resolved" and s.resolve_reason == "sensor swap"
        final = await handle.result()
    assert final.state == "resolved"
    assert events(rig, s.alert_id) == ["opened", "resolved"]
    assert rig.notifier.steps() == ["opened", "resolved"]


async def test_repeated_breaches_update_one_alert(rig: Rig):
    async with rig.running():
        h1 = await rig.breach(make_breach(HOUR0, value=351))
        await rig.env.sleep(hours(1))
        h2 = await rig.breach(make_breach(HOUR0 + hours(1), value=355))
        h3 = await rig.breach(make_breach(HOUR0 + hours(2), value=358.5))
        await rig.breach(make_breach(HOUR0 + hours(1), value=355))  # an hour seen again
        await rig.env.sleep(hours(0.5))
        s = await state_of(h3)
    assert h1.id == h2.id == h3.id == WID
    assert h1.result_run_id == h3.result_run_id
    assert s.value == 358.5 and s.last_breach_hour == HOUR0 + hours(2)
    assert s.breach_hour == HOUR0 and s.alert_id == alert_id_for(WID, HOUR0)
    assert rig.rows("SELECT count(*), max(value) FROM alert_history") == [(1, 358.5)]
    assert events(rig, s.alert_id) == ["opened", "breach_repeated", "breach_repeated"]
    assert rig.notifier.steps() == ["opened"]


async def test_critical_breach_raises_an_acknowledged_warning(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        await handle.execute_update(UPDATE_ACK, ack(), result_type=AlertState)
        await rig.breach(make_breach(HOUR0 + hours(1), severity="critical", value=380))
        await rig.env.sleep(hours(0.2))
        s = await state_of(handle)
    assert s.severity == "critical" and s.state == "acknowledged" and s.escalated_at is None
    assert rig.notifier.steps() == ["opened", "severity-raised"]
    assert rig.notifier.calls[-1].audience == "technicians"


async def test_clear_resolves_acknowledged_alert_and_respects_breach_order(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        await handle.execute_update(UPDATE_ACK, ack(), result_type=AlertState)
        await rig.breach(make_breach(HOUR0 + hours(2)))
        # A clear computed for an hour before the latest breach does not clear it.
        await handle.signal("clear", make_clear(HOUR0 + hours(1)))
        await rig.env.sleep(hours(0.2))
        assert (await state_of(handle)).condition_state == "active"
        await handle.signal("clear", make_clear(HOUR0 + hours(4)))
        final = await handle.result()
    assert final.state == "resolved" and final.condition_state == "cleared"
    assert final.resolved_by == "rules"
    assert events(rig, final.alert_id) == [
        "opened", "acknowledged", "breach_repeated", "cleared", "resolved"]
    assert rig.notifier.steps() == ["opened", "resolved"]


async def test_clear_leaves_unacknowledged_alert_needing_a_human(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach(delay=2))
        await rig.env.sleep(hours(1))
        await handle.signal("clear", make_clear(HOUR0 + hours(3)))
        await rig.env.sleep(hours(5))  # past the escalation delay: a cleared alert stays put
        s = await state_of(handle)
        assert s.state == "cleared_unacknowledged" and s.severity == "warning"
        assert s.ack_state == "unacknowledged"
        s = await handle.execute_update(UPDATE_ACK, ack(), result_type=AlertState)
        assert s.state == "resolved"
        await handle.result()
    assert events(rig, s.alert_id) == ["opened", "cleared", "acknowledged", "resolved"]
    assert rig.notifier.steps() == ["opened", "cleared", "resolved"]


async def test_resolved_then_new_breach_opens_a_new_alert(rig: Rig):
    async with rig.running():
        h1 = await rig.breach(make_breach())
        await h1.execute_update(UPDATE_RESOLVE, ResolveRequest(
            org_id="acme", by="sup.bob", reason="fixed", request_id="r1"),
            result_type=AlertState)
        first = await h1.result()
        # The same hour evaluated again: covered by the resolved alert, no new one.
        await rig.breach(make_breach())
        await rig.env.sleep(hours(0.1))
        h2 = await rig.breach(make_breach(HOUR0 + hours(5), value=360))
        await rig.env.sleep(hours(0.1))
        second = await state_of(h2)
    assert second.alert_id != first.alert_id
    assert second.alert_id == alert_id_for(WID, HOUR0 + hours(5))
    assert second.state == "open" and second.value == 360
    assert rig.rows("SELECT alert_id, state FROM alert_history ORDER BY breach_hour") == [
        (first.alert_id, "resolved"), (second.alert_id, "open")]
    assert rig.notifier.steps(second.alert_id) == ["opened"]
    assert rig.notifier.steps(first.alert_id) == ["opened", "resolved"]


async def test_reminders_while_critical_and_unacknowledged(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach(severity="critical", value=380),
                                  reminder_minutes=30)
        await rig.env.sleep(timedelta(minutes=95))
        await handle.execute_update(UPDATE_ACK, ack(), result_type=AlertState)
        await rig.env.sleep(hours(3))
    assert rig.notifier.steps() == ["opened", "reminder-1", "reminder-2", "reminder-3"]


async def test_update_and_signal_are_idempotent_by_request_id(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        req = ack()
        await handle.execute_update(UPDATE_ACK, req, result_type=AlertState)
        again = await handle.execute_update(UPDATE_ACK, req, result_type=AlertState)
        await handle.signal("ack_requested", req)
        await rig.env.sleep(hours(0.1))
    assert again.state == "acknowledged"
    assert events(rig, again.alert_id) == ["opened", "acknowledged"]


async def test_ack_for_an_older_alert_id_is_rejected(rig: Rig):
    async with rig.running():
        handle = await rig.breach(make_breach())
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(UPDATE_ACK, ack(alert_id=f"{WID}/20200101T0000Z"),
                                        result_type=AlertState)
        assert "no longer open" in str(err.value.cause)
