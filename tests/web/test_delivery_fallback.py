"""Delivery that cannot silently fail, end to end over real HTTP: a contact whose only channel
always fails neither holds up the alert (another contact's link acknowledges it at once) nor
disappears (the failure is an alert event, shown by ``altaviz alerts list``, and the next level
of the escalation chain is told once); a step with nobody to reach goes to the organization's
fallback contact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from activities.pipeline import start_or_update_alert
from altaviz.app.cli import main
from altaviz.core.contacts import Contact, ContactsFile, load_contacts
from altaviz.core.db import connect
from altaviz.core.payloads import AlertState
from altaviz.core.policy import OrgPolicy, PolicyFile
from tests.notify.receivers import HttpReceiver, http_receiver
from tests.web.conftest import WebRig, breach
from workflows.alert import QUERY_STATE
from workflows.notify import DELIVERY_RETRY


@pytest.fixture
def broken() -> Iterator[HttpReceiver]:
    """An endpoint that answers every post with HTTP 500."""
    with http_receiver() as rec:
        rec.fail["/down"] = 10**9
        yield rec


def _contacts(rig: WebRig, *contacts: tuple[str, str, tuple[str, ...], str]) -> None:
    with connect(rig.db_url) as conn:
        load_contacts(conn, ContactsFile(contacts=tuple(
            Contact(org_id="acme", contact_id=cid, name=cid, role=role,
                    sites=sites, apprise_urls=(url,)) for cid, role, sites, url in contacts)))


def _inbox(rig: WebRig) -> str:
    return f"json://127.0.0.1:{rig.base_url.rsplit(':', 1)[1]}/inbox/receive"


async def test_a_dead_channel_neither_stalls_the_alert_nor_goes_unnoticed(
        rig: WebRig, broken: HttpReceiver, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inbox = _inbox(rig)
    _contacts(rig, ("tech-a", "technician", ("PB-01",), broken.url("down")),
              ("tech-b", "technician", ("PB-01",), f"{inbox}/tech-b"),
              ("sup-a", "supervisor", (), f"{inbox}/sup-a"))
    async with rig.worker():
        handle = await start_or_update_alert(rig.client, breach("warning"),
                                             task_queue=rig.queue, reminder_minutes=0)
        await rig.wait_for(lambda: rig.inbox("tech-b"))
        # tech-a's channel is failing and being retried right now; tech-b's link works at once
        started = time.monotonic()
        done = await rig.http.post(rig.ack_link('tech-b'))
        took = time.monotonic() - started
        assert done.status_code == 200, done.text          # applied, not queued for later
        assert "Acknowledged" in done.text and took < 3, took
        state = await handle.query(QUERY_STATE, result_type=AlertState)
        assert (state.state, state.acknowledged_by) == ("acknowledged", "tech-b")
        assert rig.rows("SELECT ack_state FROM alert_history") == [("acknowledged",)]
        assert rig.rows("SELECT count(*) FROM alert_events WHERE event_type = "
                        "'delivery_failed'") == [(0,)]     # still being retried

        # let tech-a's retries run out (server clock), then the chain's next level is told
        await rig.env.sleep(timedelta(minutes=10))
        failed = await rig.wait_for(lambda: rig.rows(
            "SELECT actor, details FROM alert_events WHERE event_type = 'delivery_failed'"))
        await rig.wait_for(lambda: rig.inbox("sup-a"))
        await rig.env.sleep(timedelta(minutes=10))
    [(actor, details)] = failed
    assert actor == "system" and details["step"] == "opened"
    assert list(details["unreached"]) == ["tech-a"]
    assert details["unreached"]["tech-a"]["json"].startswith("tech-a/json: ")
    assert details["fallback"] == ["sup-a"] and details["nobody_reached"] is False
    assert len(broken.attempts) == DELIVERY_RETRY.maximum_attempts   # retried, then given up
    assert rig.rows("SELECT attempt, status FROM notifications WHERE contact_id = 'tech-a' "
                    "ORDER BY attempt") == [(i, "failed") for i in
                                            range(1, DELIVERY_RETRY.maximum_attempts + 1)]
    [(title, body)] = rig.inbox("sup-a")                  # the fallback person: told once
    assert "tech-a could not be reached" in body and title.startswith("COMP-0001")
    assert len(rig.inbox("tech-b")) == 1

    # the failure shows in the operator's list
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", rig.db_url)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["alerts", "list", "--org", "acme", "--state",
                                          "all"]) == 0
    assert "FAILED x1" in capsys.readouterr().out


async def test_a_step_with_nobody_to_reach_goes_to_the_fallback_contact(rig: WebRig) -> None:
    # nobody of the chain covers the site; the operations desk is the last resort
    _contacts(rig, ("ops-desk", "manager", (), f"{_inbox(rig)}/ops-desk"))
    policy = PolicyFile(organizations={"acme": OrgPolicy(fallback_contact="ops-desk",
                                                         chain=("technician", "supervisor"))})
    async with rig.worker(policy=policy):
        await start_or_update_alert(rig.client, breach("warning"), task_queue=rig.queue,
                                    reminder_minutes=0)
        await rig.wait_for(lambda: rig.inbox("ops-desk"))
        failed = await rig.wait_for(lambda: rig.rows(
            "SELECT details FROM alert_events WHERE event_type = 'delivery_failed'"))
    [(details,)] = failed
    assert details["reason"].startswith("nobody to notify")
    assert details["fallback"] == ["ops-desk"] and details["unreached"] == {}
    assert details["nobody_reached"] is False
    [(_title, body)] = rig.inbox("ops-desk")
    assert "Nobody is on call" in body
