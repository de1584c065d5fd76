"""The alert history page (checked in real headless Chromium), /healthz and the demo inbox."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from altaviz.app.web import create_app
from altaviz.core.links import LinkSigner
from tests.notify.receivers import free_port
from tests.web.conftest import SECRET, VIEW_LINK, WebRig, serve

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def _chromium(url: str, screenshot: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1400,1600", "--virtual-time-budget=8000"]
    with tempfile.TemporaryDirectory() as profile:
        shot = await asyncio.create_subprocess_exec(
            exe, *flags, f"--user-data-dir={profile}", f"--screenshot={screenshot}", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(shot.wait(), 90) == 0
    with tempfile.TemporaryDirectory() as profile:
        dump = await asyncio.create_subprocess_exec(
            exe, *flags, f"--user-data-dir={profile}", "--dump-dom", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(dump.communicate(), 90)
    return out.decode()


async def test_supervisor_history_page_shows_the_whole_timeline_in_chromium(
        rig: WebRig) -> None:
    async with rig.worker():
        handle = await rig.open_alert("warning")
        await rig.env.sleep(timedelta(hours=4, minutes=1))      # unacknowledged: escalates
        await rig.wait_for(lambda: rig.inbox("sup-a"))
        _title, body = rig.inbox("sup-a")[-1]
        m = VIEW_LINK.search(body)
        assert m is not None, body
        # the message's short history link opens the page under a long view token
        short = await rig.http.get(m.group(1))
        assert short.status_code == 303 and short.headers["location"].startswith("/alerts/")
        view_url = rig.base_url + short.headers["location"]
        assert (await rig.http.post(rig.ack_link())).status_code == 200
        await rig.wait_for(lambda: rig.rows(
            "SELECT 1 FROM alert_events WHERE event_type = 'acknowledged'"))

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "alert_page.png"
        shot.unlink(missing_ok=True)
        dom = await _chromium(view_url, shot)
        assert shot.exists() and shot.stat().st_size > 10_000
        (ARTIFACTS / "alert_page.html").write_text(dom)
        for expected in ["COMP-0001 frame vibration CRITICAL 12.6 mm/s", "id=\"timeline\"",
                         "Opened: frame vibration 12.6 mm/s over the warning limit 8 mm/s",
                         "Escalated to supervisors: not acknowledged after 4 h",
                         "Acknowledged by Jo Rivera via link",
                         "Notified Jo Rivera (technician) by webhook: delivered",
                         "Notified Sam Okafor (supervisor) by webhook about the escalation",
                         "<svg", "Workflow events of this alert in the Temporal Web UI",
                         "http://127.0.0.1:8233/namespaces/default/workflows/"]:
            assert expected in dom, expected
        # the workflow engine's own events stay in the Temporal Web UI
        assert "workflow execution started" not in dom and "timer" not in dom
        # a wrong token for the page: 403, nothing shown
        r = await rig.http.get(view_url.replace("token=v2.", "token=v2.x"))
        assert r.status_code in (400, 403) and "COMP-0001" not in r.text
        other = view_url.split("?")[0].replace("vibration", "temperature") + "?" + \
            view_url.split("?")[1]
        r = await rig.http.get(other)
        assert r.status_code == 403 and "another alert" in r.text
        await handle.terminate("done")


async def test_inbox_lists_delivered_messages_with_clickable_links(rig: WebRig) -> None:
    async with rig.worker():
        await rig.open_alert()
    page = await rig.http.get("/inbox")
    assert page.status_code == 200
    assert "COMP-0001 frame vibration CRITICAL 12.6 mm/s (limit 12)" in page.text
    assert f"<a href='{rig.base_url}/a/acme/" in page.text
    assert "tech-a" in (await rig.http.get("/inbox", params={"mailbox": "tech-a"})).text
    bad = await rig.http.post("/inbox/receive/tech-a", content=b"not json")
    assert bad.status_code == 400


async def test_healthz_and_secrets_never_leak(rig: WebRig, db_url: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    ok = await rig.http.get("/healthz")
    assert ok.status_code == 200 and ok.json() == {"status": "ok", "database": "ok",
                                                   "temporal": "ok"}
    caplog.set_level(logging.DEBUG)
    password = "Db-Pa55word-never-logged"
    bad_db = f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/nope"

    async def no_temporal() -> Client:
        raise RuntimeError("connection refused")

    port = free_port()
    app = create_app(database_url=bad_db, signer=LinkSigner(SECRET), temporal=no_temporal)
    server, task = await serve(app, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.get("/healthz")
            assert r.status_code == 503
            assert r.json() == {"status": "unavailable", "database": "unreachable",
                                "temporal": "unreachable"}
            assert password not in r.text
            r = await http.get("/ack/" + LinkSigner(SECRET).issue(
                org_id="acme", alert_id="a", contact_id="t", action="ack"))
            assert r.status_code == 500 or r.status_code >= 400
            assert password not in r.text
    finally:
        server.should_exit = True
        await task
    assert password not in caplog.text and SECRET.decode() not in caplog.text


def test_serve_refuses_to_start_without_a_link_secret(tmp_path: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from altaviz.app.cli import main

    code = main(["serve", "--port", str(free_port())])
    assert code == 1
    assert "ALTAVIZ_LINK_SECRET is not set" in capsys.readouterr().err
