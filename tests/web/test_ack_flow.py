"""The full loop over real HTTP: breach -> notification -> GET link (nothing changes) -> POST
(acknowledged in the workflow, alert_history and alert_events) -> second POST rejected; the
no-worker fallback; and every kind of bad link."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from altaviz.core.links import LinkSigner
from altaviz.core.payloads import AlertState, ResolveRequest
from tests.notify.test_links_and_contacts import _alter
from tests.web.conftest import SECRET, WebRig


async def _state(handle: Any) -> AlertState:
    return await handle.query("state", result_type=AlertState)


async def test_full_loop_get_changes_nothing_post_acknowledges_once(
        rig: WebRig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with rig.worker():
        handle = await rig.open_alert()
        title, body = rig.inbox("tech-a")[0]
        assert title == "COMP-0001 frame vibration CRITICAL 12.6 mm/s (limit 12)"
        assert "Where: Pecos 1, Permian" in body
        link = rig.ack_link()
        assert body.rstrip().endswith(f"Acknowledge: {rig.base_url}{link}")
        assert body.count("http") == 1          # one link, and a short one
        token = link.rsplit("/", 1)[1]
        before = rig.snapshot()

        page = await rig.http.get(link)
        assert page.status_code == 200
        assert "Confirm acknowledgement" in page.text and "Jo Rivera" in page.text
        assert rig.snapshot() == before
        assert (await _state(handle)).ack_state == "unacknowledged"

        done = await rig.http.post(link)
        assert done.status_code == 200, done.text
        assert "Acknowledged" in done.text
        state = await _state(handle)
        assert (state.ack_state, state.acknowledged_by, state.ack_channel) == (
            "acknowledged", "tech-a", "link")
        assert rig.rows("SELECT ack_state, acknowledged_by, ack_channel FROM alert_history") == [
            ("acknowledged", "tech-a", "link")]
        assert rig.rows("SELECT actor FROM alert_events WHERE event_type = 'acknowledged'") == [
            ("tech-a",)]
        assert rig.rows("SELECT outcome FROM link_tokens_used") == [("acknowledged",)]

        after = rig.snapshot()
        again = await rig.http.post(link)
        assert again.status_code == 409 and "already used" in again.text
        assert rig.snapshot() == after
    # the web layer never logs the secret or a token (uvicorn's access log included); the
    # test's own HTTP client (httpx) and Apprise are not the web layer
    web_log = "\n".join(r.getMessage() for r in caplog.records
                        if r.name.split(".")[0] in ("uvicorn", "altaviz", "fastapi",
                                                     "starlette"))
    assert SECRET.decode() not in caplog.text
    assert token not in web_log and token[12:] not in web_log
    assert "/a/acme/***" in web_log


async def test_no_worker_ack_is_queued_durably_and_applied_when_a_worker_returns(
        rig: WebRig) -> None:
    # No workflow cache: a stopped worker leaves no sticky task queue behind (the time-skipping
    # test server does not time sticky queues out like a real server does).
    async with rig.worker(max_cached_workflows=0):
        handle = await rig.open_alert()
    link = rig.ack_link()
    done = await rig.http.post(link)        # no worker now: update times out
    assert done.status_code == 202, done.text
    assert "will take effect" in done.text
    assert rig.rows("SELECT outcome FROM link_tokens_used") == [("queued",)]
    again = await rig.http.post(link)
    assert again.status_code == 409
    async with rig.worker(max_cached_workflows=0):      # the worker returns
        await rig.wait_for(lambda: rig.rows(
            "SELECT 1 FROM alert_history WHERE ack_state = 'acknowledged'"))
        state = await _state(handle)
    assert (state.ack_state, state.acknowledged_by) == ("acknowledged", "tech-a")
    assert rig.rows("SELECT count(*) FROM alert_events WHERE event_type = 'acknowledged'") == [
        (1,)]


async def test_every_bad_link_is_a_clear_4xx_page_and_changes_nothing(rig: WebRig) -> None:
    async with rig.worker():
        handle = await rig.open_alert()
        token = rig.ack_token()
        claims = rig.signer.verify(token, action="ack")
        alert_id = claims.alert_id
        other = LinkSigner(b"somebody-elses-secret-0123456789")
        cases = {
            "forged": (other.issue(org_id="acme", alert_id=alert_id, contact_id="tech-a",
                                   action="ack"), 403, "not issued by this server"),
            "altered alert id": (_alter(token, a=alert_id + "x"), 403, "altered"),
            "altered recipient": (_alter(token, r="sup-a"), 403, "altered"),
            "expired": (rig.signer.issue(org_id="acme", alert_id=alert_id, contact_id="tech-a",
                                         action="ack", now=datetime.now(UTC) - timedelta(days=9)),
                        410, "expired"),
            "wrong action": (rig.signer.issue(org_id="acme", alert_id=alert_id,
                                              contact_id="sup-a", action="view"), 403,
                             "not to acknowledge"),
            "other org": (rig.signer.issue(org_id="bravo", alert_id=alert_id,
                                           contact_id="tech-a", action="ack"), 404,
                          "does not match any alert of your organization"),
            "garbage": ("v1.abc", 400, "incomplete or damaged"),
        }
        before = rig.snapshot()
        state_before = await _state(handle)
        for kind, (bad, status, text) in cases.items():
            for method in ("get", "post"):
                r = await getattr(rig.http, method)(f"/ack/{bad}")
                assert r.status_code == status, (kind, method, r.text)
                assert text in r.text and "Nothing was changed." in r.text, kind
                assert r.headers["content-type"].startswith("text/html")
        # a view token on the ack route was covered; an ack token on the view route too:
        r = await rig.http.get(f"/alerts/{alert_id}", params={"token": token})
        assert r.status_code == 403 and "not to view" in r.text
        assert rig.snapshot() == before
        assert await _state(handle) == state_before

        # reused: confirm once, then the same link again
        assert (await rig.http.post(f"/ack/{token}")).status_code == 200
        after_ack = rig.snapshot()
        r = await rig.http.post(f"/ack/{token}")
        assert r.status_code == 409 and "already used" in r.text
        assert rig.snapshot() == after_ack

        # replayed after resolution: a never-used link of the same alert, alert now resolved
        late = rig.signer.issue(org_id="acme", alert_id=alert_id, contact_id="sup-a",
                                action="ack")
        await handle.execute_update("resolve", ResolveRequest(
            org_id="acme", by="sup-a", reason="bearing replaced", request_id="r-1"))
        await rig.wait_for(lambda: rig.rows(
            "SELECT 1 FROM alert_history WHERE state = 'resolved'"))
        resolved = rig.snapshot()
        for method in ("get", "post"):
            r = await getattr(rig.http, method)(f"/ack/{late}")
            assert r.status_code == 410 and "already resolved" in r.text
        assert rig.snapshot() == resolved
        assert (await _state(handle)).resolved_by == "sup-a"


async def test_a_bad_short_link_is_a_clear_4xx_page_and_changes_nothing(rig: WebRig) -> None:
    async with rig.worker():
        handle = await rig.open_alert()
        link = rig.ack_link()
        _, _, org, code = link.split("/")
        altered = code[:12] + ("A" if code[12] != "A" else "B") + code[13:]
        other_id = ("A" if code[0] != "A" else "B") + code[1:]
        cases = {
            "another signature": (f"/a/{org}/{altered}", 403, "not issued by this server"),
            "unknown id": (f"/a/{org}/{other_id}", 403, "not issued by this server"),
            "another organization": (f"/a/bravo/{code}", 403, "not issued by this server"),
            "not an organization": (f"/a/NO%20SUCH/{code}", 403, "not issued by this server"),
            "cut short": (f"/a/{org}/{code[:-3]}", 400, "incomplete or damaged"),
        }
        before = rig.snapshot()
        state_before = await _state(handle)
        for kind, (path, status, text) in cases.items():
            for method in ("get", "post"):
                r = await getattr(rig.http, method)(path)
                assert r.status_code == status, (kind, method, r.text)
                assert text in r.text and "Nothing was changed." in r.text, kind
        assert rig.snapshot() == before
        assert await _state(handle) == state_before
        # the genuine link still works after all that
        assert (await rig.http.post(link)).status_code == 200
