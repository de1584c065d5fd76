"""The console's silences, forecast and sign-in link pages in Debian's Chromium (Playwright),
at phone (360 px) and desktop (1280 px) width: no page scrolls sideways; a supervisor creates
a silence through the form and expires it; another organization's silence is refused; a
sign-in link from the inbox signs in. Screenshots go to the pytest base temporary folder."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from altaviz.app.holds import add_silence, add_window
from altaviz.app.web.sign_in_link import set_user_contact
from altaviz.core.db import connect
from altaviz.core.silences import MaintenanceWindow, Matchers, Recurrence
from rules.loader import load_rule_set
from rules.store import save_rule_set
from tests.browser.test_console_browser import CHROMIUM, WIDTHS, _no_sideways_scroll
from tests.web.conftest import WebRig
from tests.web.console_data import ACME_LOGIN, PASSWORD, seed
from tests.web.test_console_plans import insert_predictions, link_server, prediction

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is missing (apt-get install chromium)")
LINK = re.compile(r"http://127\.0\.0\.1:\d+/console/sign-in/link/[A-Za-z0-9_.-]+")


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


def _data(db_url: str) -> int:
    """Rules, a weekly window, a long-named comment, and bravo's silence (its id)."""
    now = datetime.now(UTC)
    seed(db_url)
    with connect(db_url) as conn:
        save_rule_set(conn, load_rule_set())
        add_window(conn, MaintenanceWindow(
            org_id="acme", site_id="PB-01", starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=90), reason="valve checks", created_by="sam",
            recurrence=Recurrence(weekday="tuesday", start="06:00", end="14:00",
                                  timezone="America/Chicago", nth_of_month=2)))
        set_user_contact(conn, "acme", ACME_LOGIN, "sup-a")
        hour = now.replace(minute=0, second=0, microsecond=0)
        insert_predictions(conn, [
            prediction("acme", "COMP-0002", "discharge_temp_high", "discharge_temp_max_f",
                        hour, 60.0, 43.0, 82.0, 350.0, "shutdown"),
            prediction("acme", "COMP-0001", "vibration_frame_high", "vibration_frame_mm_s",
                        hour, 10.0, 6.0, None, 12.0, "critical")])
        return add_silence(conn, "bravo", Matchers(compressor_ids=("COMP-0003",)),
                           starts_at=now, ends_at=now + timedelta(hours=4),
                           created_by="kim@bravo.example", comment="bravo valve job")


async def test_silences_forecast_and_link_pages_in_chromium(rig: WebRig, shots: Path) -> None:
    from playwright.async_api import async_playwright

    bravo_silence = _data(rig.db_url)
    base = rig.base_url
    async with link_server(rig) as link_base, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for width in WIDTHS:
                ctx = await browser.new_context(viewport={"width": width, "height": 800})
                page: Any = await ctx.new_page()
                await page.goto(f"{base}/console/sign-in?next=/console/silences")
                await page.fill("input[name=login]", ACME_LOGIN)
                await page.fill("input[name=password]", PASSWORD)
                await page.click("main button[type=submit]")
                await page.wait_for_url(re.compile(r".*/console/silences$"))
                assert "valve checks" in await page.inner_text("#windows")
                assert "bravo valve job" not in await page.inner_text("main")
                await _no_sideways_scroll(page, width, shots, "silences")

                # a bad matcher: the command's error, the form kept
                await page.fill("input[name=rules]", "no_such_rule")
                await page.fill("input[name=comment]", f"job at {width}")
                await page.click("#silence-form button[type=submit]")
                assert "unknown rule 'no_such_rule'" in await page.inner_text("#error")
                await _no_sideways_scroll(page, width, shots, "silences-error")

                # create one through the form, started from the compressor's page
                await page.goto(f"{base}/console/compressors/COMP-0001")
                await page.click("#silence-unit")
                await page.wait_for_url(re.compile(r".*/console/silences\?compressor=.*"))
                assert await page.input_value("input[name=compressors]") == "COMP-0001"
                await page.fill("input[name=compressors]", "COMP-0001,COMP-0002")
                await page.fill("input[name=comment]", f"job at {width}")
                await page.select_option("select[name=severity]", ["critical"])
                await page.fill("input[name=until]", "3h")
                await page.click("#silence-form button[type=submit]")
                await page.wait_for_url(re.compile(r".*/console/silences\?done=.*"))
                done = await page.inner_text("#done")
                sid = int(re.findall(r"created silence (\d+)", done)[0])
                item = page.locator(f"#silence-{sid}")
                assert "active" in await item.inner_text()
                assert "compressor=COMP-0001,COMP-0002 severity=critical" in \
                    await item.inner_text()
                await _no_sideways_scroll(page, width, shots, "silences-created")

                # expire it from the page
                await item.locator("button").click()
                await page.wait_for_url(re.compile(r".*done=expired.*"))
                assert "expired" in await page.locator(f"#silence-{sid} .status").inner_text()
                [(ends, by)] = rig.rows("SELECT ends_at, expired_by FROM silences "
                                        "WHERE silence_id = %s", sid)
                assert ends <= datetime.now(UTC) and by == ACME_LOGIN

                # another organization's silence, posted with the signed-in supervisor's own
                # form token: refused, and left as it was
                await page.evaluate(
                    """id => { const f = document.querySelector('#silence-form');
                               f.action = '/console/silences/' + id + '/expire'; f.submit(); }""",
                    bravo_silence)
                await page.wait_for_load_state()
                assert f"no silence {bravo_silence} in organization acme" in \
                    await page.inner_text("#error")
                assert rig.rows("SELECT expired_by FROM silences WHERE silence_id = %s",
                                bravo_silence) == [(None,)]

                await page.click("a[href='/console/forecast']")
                await page.wait_for_url(re.compile(r".*/console/forecast$"))
                first = await page.locator("#forecast li").first.inner_text()
                assert "COMP-0001" in first and "at least 6 h" in first
                await _no_sideways_scroll(page, width, shots, "forecast")
                await ctx.close()

            # the sign-in link, on a phone: asked for, read in the inbox, opened
            ctx = await browser.new_context(viewport={"width": 360, "height": 800})
            page = await ctx.new_page()
            await page.goto(f"{link_base}/console/sign-in")
            await page.click("text=Send me a sign-in link instead")
            await page.fill("input[name=login]", ACME_LOGIN)
            await page.click("main button[type=submit]")
            assert "sign-in link is on its way" in await page.inner_text("#message")
            await _no_sideways_scroll(page, 360, shots, "sign-in-link")
            [(_, body)] = await rig.wait_for(lambda: rig.inbox("sup-a"))
            m = LINK.search(body)
            assert m is not None
            await page.goto(m.group(0))
            await _no_sideways_scroll(page, 360, shots, "sign-in-link-open")
            await page.click("main button[type=submit]")
            await page.wait_for_url(re.compile(r".*/console/alerts$"))
            assert "Sam Okafor" in await page.inner_text("nav")
            await ctx.close()
        finally:
            await browser.close()
