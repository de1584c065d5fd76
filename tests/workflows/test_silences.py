"""Silences and maintenance windows in the alert workflow, on the time-skipping server against
real PostgreSQL: notifications held back and recorded, one notification when the hold ends,
escalation counted from its end, organizations kept apart, a worker away when it ends."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from altaviz.app.cli import main
from altaviz.core import db
from altaviz.core.payloads import AlertState
from tests.workflows.conftest import HOUR0, Rig, hours, make_breach
from tests.workflows.test_durability import late_worker
from workflows.alert import QUERY_STATE


def add_silence(rig: Rig, org: str, start: datetime, end: datetime, **matchers: Any) -> int:
    with rig.pool.connection() as conn, db.tenant(conn, org):
        row = conn.execute(
            "INSERT INTO silences (org_id, compressor_ids, site_ids, rule_ids, severities,"
            " starts_at, ends_at, created_by, comment) VALUES (%s, %s, %s, %s, %s, %s, %s,"
            " 'sup.amy', 'planned valve work') RETURNING silence_id",
            (org, matchers.get("compressor_ids"), matchers.get("site_ids"),
             matchers.get("rule_ids"), matchers.get("severities"), start, end)).fetchone()
    assert row is not None
    return int(row[0])


def add_window(rig: Rig, org: str, compressor: str, start: datetime, end: datetime,
               recurrence: dict[str, Any] | None = None) -> None:
    with rig.pool.connection() as conn, db.tenant(conn, org):
        conn.execute(
            "INSERT INTO maintenance_windows (org_id, compressor_id, starts_at, ends_at, reason,"
            " created_by, recurrence) VALUES (%s, %s, %s, %s, 'overhaul', 'sup.amy', %s)",
            (org, compressor, start, end, Jsonb(recurrence) if recurrence else None))


def events(rig: Rig, alert_id: str) -> list[str]:
    return [r[0] for r in rig.rows(
        "SELECT event_type FROM alert_events WHERE alert_id = %s ORDER BY event_id", alert_id)]


async def test_silence_holds_two_hours_of_breaches_then_notifies_once(rig: Rig):
    now = await rig.env.get_current_time()
    add_silence(rig, "acme", now - hours(1), now + hours(2), compressor_ids=["COMP-0001"])
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(1))
        await rig.breach(make_breach(hours_after(1)))
        await rig.breach(make_breach(hours_after(2), severity="critical"))
        await rig.env.sleep(hours(0.5))
        held = await handle.query(QUERY_STATE, result_type=AlertState)
        assert rig.notifier.steps() == []
        await rig.env.sleep(hours(1))
        s = await handle.query(QUERY_STATE, result_type=AlertState)
    # nobody was told during the silence; everything is on the timeline
    assert held.severity == "critical"
    ev = events(rig, s.alert_id)
    assert ev[:4] == ["opened", "notify_held", "breach_repeated", "severity_raised"]
    assert ev.count("notify_held") == 2 and ev.count("unsilenced") == 1
    # one notification when the silence ended, saying how long it was held
    steps = rig.notifier.steps()
    assert len(steps) == 1 and steps[0].startswith("unsilenced-"), steps
    sent = rig.notifier.calls[0]
    assert sent.alert.held_since is not None and sent.alert.held_until is not None
    assert abs(sent.alert.held_until - (now + hours(2))) < timedelta(minutes=1)


def hours_after(n: int) -> datetime:
    return HOUR0 + hours(n)


async def test_escalation_counts_from_the_end_of_the_silence(rig: Rig):
    now = await rig.env.get_current_time()
    add_silence(rig, "acme", now, now + hours(3), rule_ids=["discharge_temp_high"])
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(6))
        s = await handle.query(QUERY_STATE, result_type=AlertState)
        assert s.severity == "warning", "escalated 4 h after opening despite the silence"
        await rig.env.sleep(hours(1.5))
        s = await handle.query(QUERY_STATE, result_type=AlertState)
    assert s.severity == "critical" and s.escalated_at is not None
    assert abs(s.escalated_at - (now + hours(7))) < timedelta(minutes=20)
    assert [x.split("-")[0] for x in rig.notifier.steps()] == ["unsilenced", "escalated"]


async def test_a_silence_of_one_organization_never_holds_another(rig: Rig):
    now = await rig.env.get_current_time()
    add_silence(rig, "acme", now - hours(1), now + hours(5), rule_ids=["discharge_temp_high"])
    # bravo's silence names acme's compressor: it cannot match acme's alert either
    add_silence(rig, "bravo", now - hours(1), now + hours(5), compressor_ids=["COMP-0001"])
    async with rig.running():
        await rig.breach(make_breach(org="bravo", compressor="COMP-0003", site="EF-01"))
        await rig.breach(make_breach(compressor="COMP-0002"))
        await rig.env.sleep(hours(0.2))
    assert rig.notifier.steps() == ["opened"]
    assert rig.notifier.calls[0].alert.org_id == "bravo"


async def test_silence_expired_early_releases_the_alert_within_the_recheck(rig: Rig):
    now = await rig.env.get_current_time()
    sid = add_silence(rig, "acme", now, now + hours(24), compressor_ids=["COMP-0001"])
    async with rig.running():
        await rig.breach(make_breach())
        await rig.env.sleep(hours(1))
        with rig.pool.connection() as conn, db.tenant(conn, "acme"):
            conn.execute("UPDATE silences SET ends_at = %s, expired_by = 'sup.amy'"
                         " WHERE silence_id = %s", (now + hours(1), sid))
        await rig.env.sleep(hours(0.5))
    assert len(rig.notifier.steps()) == 1


async def test_silence_ending_while_no_worker_runs_takes_effect_on_restart(rig: Rig):
    now = await rig.env.get_current_time()
    add_silence(rig, "acme", now, now + hours(1), compressor_ids=["COMP-0001"])
    async with rig.running(max_cached_workflows=0):
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(0.5))
        assert rig.notifier.steps() == []
    async with late_worker(rig, hours(2)):
        s = await handle.query(QUERY_STATE, result_type=AlertState)
    # a second worker start must not send it again
    async with rig.running():
        await rig.env.sleep(hours(0.5))
    steps = rig.notifier.steps()
    assert len(steps) == 1 and steps[0].startswith("unsilenced-"), steps
    assert events(rig, s.alert_id).count("unsilenced") == 1


async def test_open_alert_in_a_maintenance_window_stays_open_but_silent(rig: Rig):
    now = await rig.env.get_current_time()
    add_window(rig, "acme", "COMP-0001", now + hours(1), now + hours(6))
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(5))
        s = await handle.query(QUERY_STATE, result_type=AlertState)
        assert s.state == "open" and s.severity == "critical"  # escalated, on the timeline
        assert rig.notifier.steps() == ["opened"]               # but nobody paged
        await rig.env.sleep(hours(1.5))
    ev = events(rig, s.alert_id)
    assert ev[:3] == ["opened", "escalated", "notify_held"]
    held = rig.rows("SELECT details->>'held_by', details->>'step' FROM alert_events"
                    " WHERE event_type = 'notify_held'")
    assert held == [("maintenance", "escalated")]
    steps = rig.notifier.steps()
    assert steps[0] == "opened" and steps[1].startswith("unsilenced-") and len(steps) == 2


async def test_silence_expire_and_add_tell_the_open_alerts_at_once(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``altaviz silence expire`` signals the alerts the silence held: the held alert is
    notified within minutes, not at its next 15-minute re-check; ``silence add`` tells the
    matching open alerts too (a held one takes the new end at once), and never another
    organization's."""
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", rig.db_url)
    monkeypatch.setenv("ALTAVIZ_TEMPORAL_ADDRESS", rig.client.service_client.config.target_host)
    now = await rig.env.get_current_time()
    sid = add_silence(rig, "acme", now, now + hours(24), compressor_ids=["COMP-0001"])
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(timedelta(minutes=65))   # re-checks at :15 :30 :45 :60, next :75
        assert rig.notifier.steps() == []
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["silence", "expire", str(sid), "--org", "acme",
                                               "--by", "sup.amy"]) == 0
        assert "1 open alert(s) told to apply it now" in capsys.readouterr().out
        await rig.env.sleep(timedelta(minutes=2))
        steps = rig.notifier.steps()
        assert len(steps) == 1 and steps[0].startswith("unsilenced-"), steps
        s = await handle.query(QUERY_STATE, result_type=AlertState)
        assert events(rig, s.alert_id).count("unsilenced") == 1
        # a new silence: told to the matching open alert of acme only (bravo has none open)
        assert await asyncio.to_thread(main, [
            "silence", "add", "--org", "acme", "--by", "sup.amy", "--comment", "valve job",
            "--duration", "2h", "compressor=COMP-0001"]) == 0
        assert "1 open alert(s) told to apply it now" in capsys.readouterr().out
        assert await asyncio.to_thread(main, [
            "silence", "add", "--org", "bravo", "--by", "sup.bo", "--comment", "x",
            "--duration", "2h", "site=EF-01"]) == 0
        assert "told" not in capsys.readouterr().out
        await rig.env.sleep(timedelta(minutes=5))
    assert len(rig.notifier.steps()) == 1   # the signal re-checks; it never notifies twice
