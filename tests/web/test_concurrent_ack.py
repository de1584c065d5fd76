"""Two acknowledgements of one alert at once: both pass the workflow's check before either is
applied, the first one wins, and the second person is told who acknowledged first (the page
and the CLI), never "acknowledged by you". Also: a critical alert at open reaches the site's
supervisor under the default escalation policy.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from altaviz.app.commands.alerts import acknowledge
from altaviz.core.payloads import AckRequest, AlertState
from tests.web.conftest import WebRig

WORKFLOW_ID = "alert/acme/COMP-0001/vibration_frame_high"


async def test_critical_at_open_reaches_the_supervisor(rig: WebRig) -> None:
    async with rig.worker():
        await rig.open_alert("critical")
        sup = await rig.wait_for(lambda: rig.inbox("sup-a"))
    assert len(sup) == 1 and "COMP-0001" in sup[0][0]
    assert len(rig.inbox("tech-a")) == 1


async def test_second_concurrent_link_ack_is_told_who_was_first(rig: WebRig) -> None:
    async with rig.worker(max_cached_workflows=0):   # no sticky queue left behind
        handle = await rig.open_alert("critical")
        await rig.wait_for(lambda: rig.inbox("sup-a"))
    tokens = {who: rig.ack_link(who) for who in ("tech-a", "sup-a")}
    # No worker while both arrive: the server hands both to the next workflow task together.
    posts = {who: asyncio.create_task(rig.http.post(t)) for who, t in tokens.items()}
    await asyncio.sleep(0.3)
    async with rig.worker():
        pages = {who: await task for who, task in posts.items()}
        state = await handle.query("state", result_type=AlertState)
    first = state.acknowledged_by
    assert first in tokens
    second = next(who for who in tokens if who != first)
    assert pages[first].status_code == 200 and "Acknowledged" in pages[first].text
    assert pages[second].status_code == 409, pages[second].text
    assert f"acknowledged by {first}" in pages[second].text
    assert "Thank you" not in pages[second].text
    assert rig.rows("SELECT actor FROM alert_events WHERE event_type = 'acknowledged'") == [
        (first,)]
    outcomes = dict(rig.rows("SELECT outcome, count(*) FROM link_tokens_used GROUP BY 1"))
    assert outcomes == {"acknowledged": 1, "released": 1}


async def test_second_concurrent_cli_ack_is_told_who_was_first(rig: WebRig) -> None:
    async with rig.worker(max_cached_workflows=0):
        handle = await rig.open_alert("critical")
        state = await handle.query("state", result_type=AlertState)
    reqs = [AckRequest(org_id="acme", by=who, channel="cli", request_id=f"cli-{uuid.uuid4()}",
                       requested_at=datetime.now(UTC), alert_id=state.alert_id)
            for who in ("jo", "sam")]
    calls = [asyncio.create_task(acknowledge(rig.client, WORKFLOW_ID, r)) for r in reqs]
    await asyncio.sleep(0.3)
    async with rig.worker():
        results = [await c for c in calls]
    outcomes = sorted(outcome for outcome, _ in results)
    assert outcomes == ["acknowledged", "already"], results
    winner = next(s for o, s in results if o == "acknowledged")
    loser = next(s for o, s in results if o == "already")
    assert loser.acknowledged_by == winner.acknowledged_by
