"""An alert is identified by the runs of its own workflow chain: after continue-as-new, and once
a later alert reuses the workflow id, each alert's history page shows its own runs only (and
links to its own run in the Temporal Web UI)."""

from __future__ import annotations

from datetime import timedelta

from activities.pipeline import start_or_update_alert
from altaviz.core.payloads import AlertState, ResolveRequest
from tests.web.conftest import HOUR, WebRig, breach
from workflows.alert import QUERY_STATE, UPDATE_RESOLVE


async def _page(rig: WebRig, alert_id: str) -> str:
    token = rig.signer.issue(org_id="acme", alert_id=alert_id, contact_id="sup-a",
                             action="view")
    r = await rig.http.get(f"/alerts/{alert_id}", params={"token": token})
    assert r.status_code == 200, r.text
    return r.text


async def test_each_alert_page_shows_only_its_own_runs(rig: WebRig) -> None:
    async with rig.worker():
        first = breach("warning")
        handle = await start_or_update_alert(rig.client, first, task_queue=rig.queue,
                                             reminder_minutes=0, max_history_events=30)
        for i in range(1, 9):       # enough repeated breaches to continue as new
            await start_or_update_alert(
                rig.client, first.model_copy(update={"hour": HOUR + timedelta(hours=i)}),
                task_queue=rig.queue, reminder_minutes=0, max_history_events=30)
            await rig.env.sleep(timedelta(minutes=3))
        one = await handle.query(QUERY_STATE, result_type=AlertState)
        await handle.execute_update(UPDATE_RESOLVE, ResolveRequest(
            org_id="acme", by="sup-a", reason="valve replaced", request_id="r-1"))
        # a later breach on the same key: a new alert under the same workflow id
        await start_or_update_alert(
            rig.client, first.model_copy(update={"hour": HOUR + timedelta(hours=30)}),
            task_queue=rig.queue, reminder_minutes=0, max_history_events=30)
        two_id = await rig.wait_for(lambda: rig.rows(
            "SELECT alert_id FROM alert_history WHERE alert_id <> %s", one.alert_id))
        two_id = two_id[0][0]
        await rig.env.sleep(timedelta(minutes=5))
        runs = dict(rig.rows("SELECT alert_id, run_ids FROM alert_history"))
        page_one = await _page(rig, one.alert_id)
        page_two = await _page(rig, two_id)
    one_runs, two_runs = runs[one.alert_id], runs[two_id]
    assert len(one_runs) >= 2, one_runs          # the first alert continued as new
    assert not set(one_runs) & set(two_runs)
    # the timeline is the alert's own (PostgreSQL's record), its workflow link the alert's own
    # latest run; the raw workflow events are in the Temporal Web UI, not on the page
    assert f"/{one_runs[-1]}/history" in page_one
    assert not any(r in page_one for r in two_runs)
    assert "workflow execution" not in page_one
    assert page_one.count("Opened: ") == 1 and "Resolved by Sam Okafor" in page_one
    assert f"/{two_runs[-1]}/history" in page_two
    assert page_two.count("Opened: ") == 1 and "Resolved by" not in page_two
    assert not any(r in page_two for r in one_runs)
    assert "valve replaced" in page_one and "valve replaced" not in page_two
