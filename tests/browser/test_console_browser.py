"""The console and the alert pages in Debian's Chromium (Playwright), at phone (360 px) and
desktop (1280 px) width: no page scrolls sideways; a supervisor signs in, filters the alert
list and opens an alert; the technician acknowledges from the link in the message; the
acknowledgement shows on the timeline; another organization's alert is refused. Screenshots
of every page go to the pytest base temporary folder (``screenshots/``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from altaviz.core.links import alert_url
from tests.web.conftest import WebRig
from tests.web.console_data import ACME_LOGIN, BRAVO_ALERT, PASSWORD, seed

CHROMIUM = Path("/usr/bin/chromium")
WIDTHS = (360, 1280)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is missing (apt-get install chromium); the browser tests drive "
           "Debian's Chromium and never download a browser")


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


async def _no_sideways_scroll(page: Any, width: int, shots: Path, name: str) -> None:
    await page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{name} at {width} px scrolls sideways: {scroll} px wide"


async def test_console_and_alert_pages_in_chromium(rig: WebRig, shots: Path) -> None:
    from playwright.async_api import async_playwright

    async with rig.worker():
        await rig.open_alert("warning")
        seed(rig.db_url)
        alert_id = rig.rows("SELECT alert_id FROM alert_history WHERE compressor_id = "
                            "'COMP-0001'")[0][0]
        ack_url = f"{rig.base_url}/ack/{rig.ack_token()}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM),
                                               args=["--no-sandbox"])
            try:
                for width in WIDTHS:
                    ctx = await browser.new_context(viewport={"width": width, "height": 800})
                    page = await ctx.new_page()
                    base = rig.base_url

                    # signing in returns to the page asked for
                    await page.goto(f"{base}/console/alerts")
                    assert "/console/sign-in" in page.url
                    await _no_sideways_scroll(page, width, shots, "sign-in")
                    await page.fill("input[name=login]", "sam@acme.example")
                    await page.fill("input[name=password]", "not the password")
                    await page.click("button[type=submit]")
                    assert "Wrong login or password" in await page.inner_text("#error")
                    await page.fill("input[name=login]", ACME_LOGIN)
                    await page.fill("input[name=password]", PASSWORD)
                    await page.click("main button[type=submit]")
                    await page.wait_for_url(re.compile(r".*/console/alerts$"))
                    assert "2 alerts shown" in await page.inner_text("#shown")
                    await _no_sideways_scroll(page, width, shots, "alerts")

                    # filter: warnings of COMP-0001
                    await page.select_option("select[name=severity]", "warning")
                    await page.select_option("select[name=compressor]", "COMP-0001")
                    await page.click("#filters button[type=submit]")
                    await page.wait_for_url(re.compile(r".*severity=warning.*"))
                    assert "1 alert shown" in await page.inner_text("#shown")
                    await _no_sideways_scroll(page, width, shots, "alerts-filtered")

                    # open the alert from the list
                    await page.click("ul.alerts a")
                    await page.wait_for_url(re.compile(r".*/console/alerts/alert/acme/.*"))
                    assert "COMP-0001 frame vibration WARNING" in await page.inner_text(
                        "#alert-title")
                    assert await page.locator("svg.chart polyline").count() == 1
                    assert await page.locator("svg.chart line.limit").count() >= 1
                    await _no_sideways_scroll(page, width, shots, "alert")

                    if width == WIDTHS[0]:
                        # the technician's link, on a phone: the alert page with the button
                        await page.goto(ack_url)
                        assert "Acknowledging as Jo Rivera" in await page.inner_text("main")
                        await _no_sideways_scroll(page, width, shots, "ack-confirm")
                        await page.click("form[action^='/ack/'] button")
                        await page.wait_for_load_state()
                        assert "Thank you" in await page.inner_text("main")
                        assert "Jo Rivera" in await page.inner_text("main")
                        await _no_sideways_scroll(page, width, shots, "ack-done")
                        await rig.wait_for(lambda: rig.rows(
                            "SELECT 1 FROM alert_events WHERE event_type = 'acknowledged'"))

                    # the acknowledgement on the timeline (and as a marker on the chart)
                    await page.goto(f"{base}/console/alerts/{quote(alert_id, safe='/')}")
                    timeline = await page.inner_text("#timeline")
                    assert "Acknowledged by Jo Rivera via link" in timeline
                    assert "Opened: frame vibration 12.6 mm/s" in timeline
                    assert "Notified Jo Rivera (technician) by webhook" in timeline
                    assert "acknowledged" in await page.inner_text("#alert-state")
                    await _no_sideways_scroll(page, width, shots, "alert-acknowledged")

                    # the compressor and the organization's data quality
                    await page.click("a[href='/console/compressors/COMP-0001']")
                    await page.wait_for_url(re.compile(r".*/console/compressors/COMP-0001$"))
                    assert await page.locator("svg.chart").count() == 2
                    await _no_sideways_scroll(page, width, shots, "compressor")
                    await page.goto(f"{base}/console/quality")
                    assert "last reading 7 h ago" in await page.inner_text("#failures")
                    await _no_sideways_scroll(page, width, shots, "quality")

                    # another organization's alert: refused, nothing of it shown
                    response = await page.goto(
                        f"{base}/console/alerts/{quote(BRAVO_ALERT, safe='/')}")
                    assert response is not None and response.status == 404
                    body = await page.inner_text("main")
                    assert "COMP-0003" not in body and "oil" not in body.lower()
                    await _no_sideways_scroll(page, width, shots, "not-found")

                    # signing out ends the session
                    await page.click("nav button")
                    await page.wait_for_url(re.compile(r".*/console/sign-in$"))
                    await page.goto(f"{base}/console/alerts")
                    assert "/console/sign-in" in page.url
                    await ctx.close()

                # the signed view link of an escalation message (no session needed) and the
                # demo inbox with the messages' links, at phone width
                view = alert_url(rig.base_url, alert_id, rig.signer.issue(
                    org_id="acme", alert_id=alert_id, contact_id="sup-a", action="view"))
                ctx = await browser.new_context(viewport={"width": 360, "height": 800})
                page = await ctx.new_page()
                await page.goto(view)
                assert "Acknowledged by Jo Rivera via link" in await page.inner_text(
                    "#timeline")
                await _no_sideways_scroll(page, 360, shots, "alert-view-link")
                await page.goto(f"{rig.base_url}/inbox")
                await _no_sideways_scroll(page, 360, shots, "inbox")
                await ctx.close()
            finally:
                await browser.close()
