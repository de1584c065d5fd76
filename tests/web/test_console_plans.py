"""The console's silences, maintenance windows, forecast and one-time sign-in link over real
HTTP and PostgreSQL: a silence is created and expired through the page with the command's
validation and errors, forms need the session's token, another organization's silences,
windows and forecasts are never shown or changed; the sign-in link is sent through the
contact's Apprise channel (the demo inbox), works once, and the request answers alike whether
or not the login exists."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from altaviz.app.cli import main
from altaviz.app.demo import demo_console_users, demo_contacts
from altaviz.app.holds import add_silence, add_window
from altaviz.app.web import RedactTokens, console_plans, create_app, sign_in_link
from altaviz.app.web.sign_in_link import set_user_contact
from altaviz.core import db
from altaviz.core.contacts import Contact, ContactsFile, load_contacts
from altaviz.core.db import connect
from altaviz.core.errors import InputError
from altaviz.core.settings import Settings
from altaviz.core.silences import MaintenanceWindow, Matchers, Recurrence
from rules.loader import load_rule_set
from rules.store import save_rule_set
from tests.notify.receivers import free_port
from tests.security.test_least_privilege import as_role
from tests.web.conftest import WebRig, serve
from tests.web.console_data import ACME_LOGIN, BRAVO_LOGIN, PASSWORD, seed

TOKEN = re.compile(r'name=token value="([0-9a-f]{32})"')
LINK = re.compile(r"http://127\.0\.0\.1:\d+(/console/sign-in/link/[A-Za-z0-9_.-]+)")


@contextlib.asynccontextmanager
async def _signed_in(rig: WebRig, login: str = ACME_LOGIN
                     ) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rig.base_url, timeout=30) as http:
        r = await http.post("/console/sign-in", data={"login": login, "password": PASSWORD})
        assert r.status_code == 303
        yield http


async def _token(http: httpx.AsyncClient) -> str:
    r = await http.get("/console/silences")
    assert r.status_code == 200
    m = TOKEN.search(r.text)
    assert m is not None
    return m.group(1)


@contextlib.asynccontextmanager
async def link_server(rig: WebRig) -> AsyncIterator[str]:
    """The web app configured with its public URL (``ALTAVIZ_PUBLIC_URL``), which sign-in
    links need; the contacts' messages still go to the rig's demo inbox."""

    async def temporal() -> Any:
        return rig.client

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(database_url=rig.db_url, signer=rig.signer, temporal=temporal,
                     public_url=base, secure_cookies=False)
    server, task = await serve(app, port)
    try:
        yield base
    finally:
        server.should_exit = True
        await task


def _rules(db_url: str) -> None:
    """The default rule set, stored as ``altaviz rules load`` stores it."""
    with connect(db_url) as conn:
        save_rule_set(conn, load_rule_set())


def _bravo_silence(db_url: str) -> int:
    now = datetime.now(UTC)
    with connect(db_url) as conn:
        return add_silence(conn, "bravo", Matchers(compressor_ids=("COMP-0003",)),
                           starts_at=now, ends_at=now + timedelta(hours=4),
                           created_by="kim@bravo.example", comment="bravo valve job")


async def test_silence_created_and_expired_through_the_page(rig: WebRig) -> None:
    seed(rig.db_url)
    _rules(rig.db_url)
    bravo_id = _bravo_silence(rig.db_url)
    async with _signed_in(rig) as http:
        token = await _token(http)
        form = {"compressors": "COMP-0001", "rules": "vibration_frame_high",
                "severity": ["warning", "critical"], "start": "now", "until": "2h",
                "comment": "bearing job", "token": token}
        # without the session's token (another site's form): refused, nothing stored
        r = await http.post("/console/silences", data={**form, "token": "0" * 32})
        assert r.status_code == 403
        assert rig.rows("SELECT count(*) FROM silences WHERE org_id = 'acme'") == [(0,)]

        r = await http.post("/console/silences", data=form)
        assert r.status_code == 303, r.text
        [(sid, comps, rules, sevs, by, comment, starts, ends)] = rig.rows(
            "SELECT silence_id, compressor_ids, rule_ids, severities, created_by, comment, "
            "starts_at, ends_at FROM silences WHERE org_id = 'acme'")
        assert (comps, rules, sevs, by, comment) == (
            ["COMP-0001"], ["vibration_frame_high"], ["warning", "critical"], ACME_LOGIN,
            "bearing job")
        assert ends - starts == timedelta(hours=2)
        page = (await http.get(r.headers["location"])).text
        assert f"created silence {sid}" in page
        item = page.split(f'id="silence-{sid}"')[1].split("</li>")[0]
        assert "active" in item and "compressor=COMP-0001 rule=vibration_frame_high" in item
        # the other organization's silence is not listed
        assert f'id="silence-{bravo_id}"' not in page and "bravo valve job" not in page

        r = await http.post(f"/console/silences/{sid}/expire", data={"token": token})
        assert r.status_code == 303
        [(ends, expired_by)] = rig.rows(
            "SELECT ends_at, expired_by FROM silences WHERE silence_id = %s", sid)
        assert ends <= datetime.now(UTC) and expired_by == ACME_LOGIN
        page = (await http.get("/console/silences")).text
        assert "expired" in page.split(f'id="silence-{sid}"')[1].split("</li>")[0]
        r = await http.post(f"/console/silences/{sid}/expire", data={"token": token})
        assert r.status_code == 409 and f"silence {sid} already ended" in r.text


async def test_silence_form_gives_the_commands_errors(rig: WebRig) -> None:
    seed(rig.db_url)
    _rules(rig.db_url)
    async with _signed_in(rig) as http:
        token = await _token(http)
        base = {"start": "now", "until": "2h", "comment": "why", "token": token}
        for fields, message in (
                ({"rules": "no_such_rule"}, "unknown rule &#39;no_such_rule&#39;"),
                ({"compressors": "COMP-0003"},
                 "compressor COMP-0003 is not part of organization acme"),
                ({"sites": "EF-01"}, "site EF-01 is not part of organization acme"),
                ({}, "a silence needs at least one matcher"),
                ({"compressors": "COMP-0001", "start": "2026-03-10T06:00",
                  "until": "2026-03-10T05:00"}, "is not after the start"),
                ({"compressors": "COMP-0001", "until": "soon"}, "bad time &#39;soon&#39;")):
            r = await http.post("/console/silences", data={**base, **fields})
            assert r.status_code == 400, fields
            assert message in r.text, (fields, r.text)
            # the form keeps what was typed
            for v in fields.values():
                assert f'value="{v}"' in r.text
        assert rig.rows("SELECT count(*) FROM silences") == [(0,)]


async def test_another_organizations_silence_cannot_be_expired(rig: WebRig) -> None:
    seed(rig.db_url)
    bravo_id = _bravo_silence(rig.db_url)
    async with _signed_in(rig) as http:
        token = await _token(http)
        r = await http.post(f"/console/silences/{bravo_id}/expire", data={"token": token})
        assert r.status_code == 404
        assert f"no silence {bravo_id} in organization acme" in r.text
        assert "bravo valve job" not in r.text
    [(ends, expired_by)] = rig.rows(
        "SELECT ends_at, expired_by FROM silences WHERE silence_id = %s", bravo_id)
    assert ends > datetime.now(UTC) + timedelta(hours=3) and expired_by is None
    # bravo's own token does not pass for acme's session, nor the reverse
    async with _signed_in(rig, BRAVO_LOGIN) as bravo:
        r = await bravo.post(f"/console/silences/{bravo_id}/expire", data={"token": token})
        assert r.status_code == 403
        r = await bravo.post(f"/console/silences/{bravo_id}/expire",
                             data={"token": await _token(bravo)})
        assert r.status_code == 303


async def test_maintenance_windows_listed_with_next_occurrence_in_site_time(
        rig: WebRig) -> None:
    seed(rig.db_url)
    now = datetime.now(UTC)
    with connect(rig.db_url) as conn:
        weekly = add_window(conn, MaintenanceWindow(
            org_id="acme", site_id="PB-01", starts_at=now - timedelta(days=1),
            ends_at=now + timedelta(days=60), reason="valve checks", created_by="sam",
            recurrence=Recurrence(weekday="tuesday", start="06:00", end="14:00",
                                  timezone="America/Chicago", every_weeks=1)))
        once = add_window(conn, MaintenanceWindow(
            org_id="acme", compressor_id="COMP-0002", starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(hours=5), reason="top-end overhaul"))
        add_window(conn, MaintenanceWindow(
            org_id="bravo", compressor_id="COMP-0003", starts_at=now,
            ends_at=now + timedelta(hours=5), reason="bravo overhaul"))
    async with _signed_in(rig) as http:
        page = (await http.get("/console/silences")).text
    weekly_item = page.split(f'id="window-{weekly}"')[1].split("</li>")[0]
    assert "site PB-01" in weekly_item and "every tuesday 06:00-14:00 America/Chicago" in \
        weekly_item
    assert re.search(r"Next: Tue \w{3} \d\d 06:00 America/Chicago to Tue \w{3} \d\d 14:00 "
                     r"America/Chicago", weekly_item) or "Now: " in weekly_item, weekly_item
    once_item = page.split(f'id="window-{once}"')[1].split("</li>")[0]
    assert "in force" in once_item and "compressor COMP-0002" in once_item
    assert "bravo overhaul" not in page


def prediction(org: str, comp: str, rule: str, metric: str, hour: datetime, hours: float,
                low: float, high: float | None, limit: float, name: str) -> list[Any]:
    return [org, comp, rule, metric, hour, "linear", hour - timedelta(hours=48), hour, 48,
            1.0, 0.1, limit, name, hour + timedelta(hours=hours),
            hour + timedelta(hours=low),
            hour + timedelta(hours=high) if high is not None else None, Jsonb({})]


def insert_predictions(conn: Any, rows: list[list[Any]]) -> None:
    """Rows of ``predictions`` as the hourly run stores them."""
    with conn.transaction():
        for row in rows:
            conn.execute(
                "INSERT INTO predictions (org_id, compressor_id, rule_id, metric, hour, model, "
                "input_start, input_end, running_hours, level, slope, limit_value, "
                "limit_name, predicted_at, low_at, high_at, details) VALUES (%s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", row)


async def test_forecast_lists_units_by_shortest_forecast(rig: WebRig) -> None:
    seed(rig.db_url)
    hour = datetime(2026, 3, 2, 10, tzinfo=UTC)
    with connect(rig.db_url) as conn:
        insert_predictions(conn, [
            prediction("acme", "COMP-0002", "discharge_temp_high", "discharge_temp_max_f",
                        hour, 60.0, 43.0, 82.0, 350.0, "shutdown"),
            prediction("acme", "COMP-0001", "vibration_frame_high", "vibration_frame_mm_s",
                        hour, 10.0, 6.0, None, 12.0, "critical"),
            prediction("bravo", "COMP-0003", "oil_pressure_low", "oil_pressure_psig", hour,
                        2.0, 1.0, 3.0, 25.0, "critical")])
    async with _signed_in(rig) as http:
        r = await http.get("/console/forecast")
    assert r.status_code == 200
    items = r.text.split('id=forecast>')[1].split("<li")[1:]
    assert len(items) == 2
    first, second = items
    assert "COMP-0001" in first and "frame vibration" in first.lower()
    assert "12 mm/s (critical)" in first and "10 h" in first and "at least 6 h" in first
    assert 'href="/console/compressors/COMP-0001"' in first
    assert "COMP-0002" in second and "350 " in second and "(shutdown)" in second
    assert "2.5 days" in second and "43 h to 3.4 days" in second
    assert "COMP-0003" not in r.text and "oil" not in r.text.lower()


async def test_sign_in_link_is_sent_to_the_contact_and_works_once(rig: WebRig) -> None:
    seed(rig.db_url)
    with connect(rig.db_url) as conn:
        set_user_contact(conn, "acme", ACME_LOGIN, "sup-a")
    async with link_server(rig) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        known = await http.post("/console/sign-in/link", data={"login": ACME_LOGIN})
        unknown = await http.post("/console/sign-in/link",
                                  data={"login": "nobody@acme.example"})
        no_channel = await http.post("/console/sign-in/link", data={"login": BRAVO_LOGIN})
        answers = [re.search(r"<p id=message>(.*?)</p>", r.text) for r in
                   (known, unknown, no_channel)]
        assert all(r.status_code == 200 for r in (known, unknown, no_channel))
        assert all(a is not None for a in answers)
        assert len({a.group(1) for a in answers if a}) == 1
        assert "altaviz_session" not in known.headers.get("set-cookie", "")

        inbox = await rig.wait_for(lambda: rig.inbox("sup-a"))
        [(title, body)] = inbox
        assert title == "Altaviz sign-in link" and "works once, for 15 minutes" in body
        m = LINK.search(body)
        assert m is not None
        link = m.group(1)
        # nobody else got anything (bravo's user names no contact)
        await asyncio.sleep(0.5)
        assert rig.rows("SELECT count(*) FROM demo_inbox") == [(1,)]

        # opening the link shows a button and spends nothing (a mail scanner may fetch it)
        r = await http.get(link)
        assert r.status_code == 200 and f'action="{link}"' in r.text
        assert "altaviz_session" not in r.headers.get("set-cookie", "")
        # posted from another site: refused, and the link is not spent
        for headers in ({"Origin": "https://evil.example"},
                        {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
            r = await http.post(link, headers=headers)
            assert r.status_code == 403 and "altaviz_session" not in r.headers.get(
                "set-cookie", "")
        r = await http.post(link, headers={"Origin": base})
        assert r.status_code == 303 and r.headers["location"] == "/console/alerts"
        assert "altaviz_session=" in r.headers["set-cookie"]
        assert (await http.get("/console/alerts")).status_code == 200
        assert "Sam Okafor" in (await http.get("/console/alerts")).text
        async with httpx.AsyncClient(base_url=base, timeout=30) as again:
            r = await again.post(link)
            assert r.status_code == 410 and "already used" in r.text
            assert "altaviz_session" not in r.headers.get("set-cookie", "")
            # a tampered link is refused too
            r = await again.post(link[:-3] + "abc")
            assert r.status_code == 410


async def test_expired_sign_in_link_is_refused_and_requests_are_rate_limited(
        rig: WebRig) -> None:
    seed(rig.db_url)
    with connect(rig.db_url) as conn:
        set_user_contact(conn, "acme", ACME_LOGIN, "sup-a")
    async with link_server(rig) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert (await http.post("/console/sign-in/link",
                                data={"login": ACME_LOGIN})).status_code == 200
        [(_, body)] = await rig.wait_for(lambda: rig.inbox("sup-a"))
        m = LINK.search(body)
        assert m is not None
        rig.rows("UPDATE console_sign_in_links SET expires_at = now() - interval '1 s' "
                 "RETURNING link_id")
        r = await http.post(m.group(1))
        assert r.status_code == 410 and "altaviz_session" not in r.headers.get(
            "set-cookie", "")
        # five requests per login in 15 minutes, whether or not the login exists
        for login in (ACME_LOGIN, "nobody@acme.example"):
            codes = [(await http.post("/console/sign-in/link", data={"login": login}))
                     .status_code for _ in range(5)]
            assert codes == ([200] * 4 if login == ACME_LOGIN else [200] * 5) + (
                [429] if login == ACME_LOGIN else [])
            r = await http.post("/console/sign-in/link", data={"login": login})
            assert r.status_code == 429 and "Too many requests" in r.text
    assert rig.rows("SELECT count(*) FROM console_sign_in_links") <= [(5,)]


def test_demo_supervisors_get_sign_in_links_in_their_inbox(db_url: str, fleet: Any) -> None:
    with connect(db_url) as conn:
        load_contacts(conn, demo_contacts(fleet, "http://127.0.0.1:8765"))
    demo_console_users(db_url, fleet)
    with connect(db_url) as conn:
        rows = conn.execute("SELECT login, contact_id FROM console_users ORDER BY 1").fetchall()
        assert rows == [("supervisor@acme", "sup-acme"), ("supervisor@bravo", "sup-bravo")]
        # the lookup a link request makes finds them (an active contact to send to)
        assert conn.execute("SELECT org_id FROM console_link_lookup('supervisor@bravo')"
                            ).fetchall() == [("bravo",)]


def test_the_runtime_login_serves_links_silences_and_forecasts_of_one_organization(
        db_url: str, fleet: Any) -> None:
    """The web server's login (no table access outside a tenant) reaches the sign-in link
    lookup through migration 190's function, and every other read and write of these pages
    only within the person's organization."""
    seed(db_url)
    _rules(db_url)
    bravo_id = _bravo_silence(db_url)
    now = datetime.now(UTC)
    with connect(db_url) as conn:
        load_contacts(conn, ContactsFile(contacts=(
            Contact(org_id="acme", contact_id="sup-a", name="Sam Okafor", role="supervisor",
                    apprise_urls=("json://127.0.0.1:9/inbox/receive/sup-a",)),)))
        set_user_contact(conn, "acme", ACME_LOGIN, "sup-a")
        runtime = db.role_names(conn)["runtime"]
    url = as_role(db_url, runtime)

    found = sign_in_link.prepare_link(url, ACME_LOGIN, now)
    assert found is not None
    org, link_id, name, urls = found
    assert (org, name, urls) == ("acme", "Sam Okafor", ["json://127.0.0.1:9/inbox/receive/sup-a"])
    assert sign_in_link.prepare_link(url, BRAVO_LOGIN, now) is None  # no contact named
    assert sign_in_link.prepare_link(url, "nobody@acme.example", now) is None
    assert sign_in_link.use_link(url, "bravo", link_id) is None  # another tenant: not found
    assert sign_in_link.use_link(url, "acme", link_id) == (ACME_LOGIN, 0)
    assert sign_in_link.use_link(url, "acme", link_id) is None  # once
    with connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM console_sign_in_links")

    sid = console_plans.create(url, "acme", specs=["compressor=COMP-0001"], start="now",
                               until="1h", comment="job", by=ACME_LOGIN, now=now)
    rows, _windows, rules = console_plans.page_data(url, "acme", now)
    assert [r.silence.silence_id for r in rows] == [sid] and "vibration_frame_high" in rules
    with pytest.raises(InputError, match=f"no silence {bravo_id} in organization acme"):
        console_plans.expire(url, "acme", bravo_id, by=ACME_LOGIN, now=now)
    console_plans.expire(url, "acme", sid, by=ACME_LOGIN, now=now + timedelta(minutes=1))
    assert console_plans.forecasts(url, "acme") == []


def test_users_add_names_the_contact_of_sign_in_links(
        db_url: str, fleet: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(database_url=db_url)
    with connect(db_url) as conn:
        load_contacts(conn, ContactsFile(contacts=(
            Contact(org_id="acme", contact_id="sup-a", name="Sam Okafor", role="supervisor",
                    apprise_urls=("json://127.0.0.1:9/inbox/receive/sup-a",)),)))

    def run(*argv: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO("long-enough-pass\n"))
        return main(list(argv), settings=settings)

    args = ("users", "add", "--org", "acme", "--login", "sam@acme.example", "--name", "Sam",
            "--password-stdin")
    assert run(*args, "--contact", "sup-a") == 0
    assert run(*args, "--contact", "nobody") == 1
    assert "no contact 'nobody' in organization acme" in capsys.readouterr().err
    with connect(db_url) as conn:
        assert conn.execute("SELECT contact_id FROM console_users").fetchall() == [("sup-a",)]


def test_sign_in_link_tokens_are_redacted_from_logs() -> None:
    token = sign_in_link.LinkTokens(b"k" * 32).issue("acme", "A" * 22)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s"',
                               ("127.0.0.1", "POST", f"/console/sign-in/link/{token}"), None)
    RedactTokens().filter(record)
    assert record.args == ("127.0.0.1", "POST", "/console/sign-in/link/***")
