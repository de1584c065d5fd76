"""The supervisor console over real HTTP: sign-in (argon2, rate limit, cookie attributes,
sign-out ending the session), the alert list's filters and counts, the alert, compressor and
data-quality pages, and another organization's data refused as not found."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from temporalio.client import Client

from altaviz.app.cli import main
from altaviz.app.web import create_app
from altaviz.core.links import LinkSigner
from altaviz.core.settings import Settings
from tests.notify.receivers import free_port
from tests.web.conftest import SECRET, WebRig, serve
from tests.web.console_data import (
    ACME_LOGIN,
    ACME_NO_DATA,
    ACME_RESOLVED,
    ACME_WARNING,
    BRAVO_ALERT,
    BRAVO_LOGIN,
    PASSWORD,
    seed,
    seed_rules,
)


def href(alert_id: str) -> str:
    return f"/console/alerts/{quote(alert_id, safe='/')}"


async def _sign_in(http: httpx.AsyncClient, login: str = ACME_LOGIN,
                   password: str = PASSWORD, next_: str = "") -> httpx.Response:
    return await http.post("/console/sign-in", data={"login": login, "password": password,
                                                     "next": next_})


async def test_pages_need_a_session_and_sign_in_returns_to_the_page(rig: WebRig) -> None:
    seed(rig.db_url)
    for path in ("/console/alerts", "/console/quality", "/console/compressors/COMP-0001",
                 f"/console/alerts/{ACME_WARNING}"):
        r = await rig.http.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/console/sign-in?next=")
    r = await _sign_in(rig.http, next_="/console/quality")
    assert r.status_code == 303 and r.headers["location"] == "/console/quality"
    # an outside target is never followed
    r = await _sign_in(rig.http, next_="https://evil.example/console/x")
    assert r.headers["location"] == "/console/alerts"
    r = await _sign_in(rig.http, next_="//evil.example/console/x")
    assert r.headers["location"] == "/console/alerts"
    assert (await rig.http.get("/console/quality")).status_code == 200


async def test_wrong_passwords_are_refused_then_rate_limited(rig: WebRig) -> None:
    seed(rig.db_url)
    r = await _sign_in(rig.http, password="wrong-password-123")
    assert r.status_code == 401 and "Wrong login or password" in r.text
    assert "altaviz_session" not in r.headers.get("set-cookie", "")
    unknown = await _sign_in(rig.http, login="nobody@acme.example")
    assert unknown.status_code == 401 and "Wrong login or password" in unknown.text
    for _ in range(4):
        assert (await _sign_in(rig.http, password="wrong-password-123")).status_code == 401
    # the sixth attempt within the window is refused even with the right password
    r = await _sign_in(rig.http)
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert "altaviz_session" not in r.headers.get("set-cookie", "")
    # the lock is per login: another person at the same address still signs in
    assert (await _sign_in(rig.http, login=BRAVO_LOGIN)).status_code == 303


async def test_many_failures_from_one_address_are_rate_limited_across_logins(
        rig: WebRig) -> None:
    seed(rig.db_url)
    for i in range(20):
        r = await _sign_in(rig.http, login=f"guess{i}@acme.example")
        assert r.status_code == 401
    assert (await _sign_in(rig.http)).status_code == 429


async def test_session_cookie_is_secure_http_only_same_site_and_sign_out_ends_it(
        rig: WebRig, db_url: str) -> None:
    seed(rig.db_url)

    async def no_temporal() -> Client:
        raise RuntimeError("not needed")

    port = free_port()
    app = create_app(database_url=db_url, signer=LinkSigner(SECRET), temporal=no_temporal,
                     session_secret=b"s" * 32)
    server, task = await serve(app, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await _sign_in(http)
            assert r.status_code == 303
            cookie = r.headers["set-cookie"].lower()
            for attribute in ("altaviz_session=", "httponly", "secure", "samesite=lax",
                              "path=/console", "max-age=43200"):
                assert attribute in cookie, attribute
    finally:
        server.should_exit = True
        await task

    r = await _sign_in(rig.http)
    session = rig.http.cookies.get("altaviz_session", path="/console")
    assert session and r.status_code == 303
    assert (await rig.http.get("/console/alerts")).status_code == 200
    out = await rig.http.post("/console/sign-out")
    assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
    # the old cookie, replayed, no longer opens anything
    async with httpx.AsyncClient(base_url=rig.base_url,
                                 cookies={"altaviz_session": session}) as replay:
        assert (await replay.get("/console/alerts")).status_code == 303
    # a forged cookie neither
    async with httpx.AsyncClient(base_url=rig.base_url,
                                 cookies={"altaviz_session": session[:-2] + "xx"}) as forged:
        assert (await forged.get("/console/alerts")).status_code == 303


async def test_alert_list_filters_and_counts(rig: WebRig) -> None:
    async with rig.worker():
        await rig.open_alert("critical")
    seed(rig.db_url)
    assert (await _sign_in(rig.http)).status_code == 303
    page = (await rig.http.get("/console/alerts")).text
    # not resolved by default: the real critical alert and the open warning, not bravo's
    assert "COMP-0001" in page and href(ACME_WARNING) in page
    assert href(ACME_RESOLVED) not in page and "COMP-0003" not in page
    assert "2 alerts shown" in page
    assert "critical not resolved: 1" in page and "warning not resolved: 1" in page
    assert "resolved: 1" in page          # counts span every state
    crit = (await rig.http.get("/console/alerts", params={"severity": "critical"})).text
    assert "1 alert shown" in crit and "COMP-0001" in crit and href(ACME_WARNING) not in crit
    past = (await rig.http.get("/console/alerts", params={"state": "resolved"})).text
    assert href(ACME_RESOLVED) in past and "1 alert shown" in past
    everything = (await rig.http.get("/console/alerts", params={"state": "all"})).text
    assert "3 alerts shown" in everything
    by_comp = (await rig.http.get("/console/alerts", params={
        "compressor": "COMP-0002", "state": "all"})).text
    assert "2 alerts shown" in by_comp and "COMP-0001</b>" not in by_comp
    by_rule = (await rig.http.get("/console/alerts", params={
        "rule": "bearing_temp_high"})).text
    assert "1 alert shown" in by_rule and href(ACME_WARNING) in by_rule
    by_site = (await rig.http.get("/console/alerts", params={"site": "EF-01"})).text
    assert "0 alerts shown" in by_site     # bravo's site: nothing of acme, nothing of bravo
    # the breach-time filter is relative to now: the 2026-03 breaches are older than 24 h
    recent = (await rig.http.get("/console/alerts", params={"since": "24"})).text
    assert "0 alerts shown" in recent
    # another organization's ids do not appear among the choices
    assert "EF-01" not in page and "oil_pressure_low" not in page


async def test_alert_page_shows_chart_and_domain_timeline(rig: WebRig) -> None:
    async with rig.worker():
        await rig.open_alert("critical")
        token = rig.ack_token()
        assert (await rig.http.post(f"/ack/{token}")).status_code == 200
    seed(rig.db_url)
    alert_id = rig.rows("SELECT alert_id FROM alert_history WHERE compressor_id = "
                        "'COMP-0001'")[0][0]
    assert (await _sign_in(rig.http)).status_code == 303
    page = (await rig.http.get(f"/console/alerts/{quote(alert_id, safe='/')}")).text
    assert "COMP-0001 frame vibration CRITICAL 12.6 mm/s" in page
    assert "<svg" in page and "<polyline class=series" in page
    # the acknowledgement came long after the breach (the test server's clock): only the
    # breach is inside the chart's window
    assert "breach</text>" in page
    assert "72 hours with data" in page
    assert "Notified Jo Rivera (technician) by webhook: delivered" in page
    assert "Acknowledged by Jo Rivera via link" in page
    assert "Workflow events of this alert in the Temporal Web UI" in page
    assert "activity task" not in page and "10.823333" not in page
    comp = (await rig.http.get("/console/compressors/COMP-0001")).text
    assert "Key metrics" in comp and comp.count("<svg") == 2        # vibration, bearing temp
    assert "freshness" in comp and "pass" in comp
    assert "last reading 30 min ago (limit 1 h 15 min)" in comp
    assert "1% of readings missing (limit 5%)" in comp


async def test_limits_come_from_threshold_rules_and_data_missing_reads_as_hours(
        rig: WebRig) -> None:
    async with rig.worker():
        await rig.open_alert("critical")
    seed(rig.db_url)
    seed_rules(rig.db_url)
    alert_id = rig.rows("SELECT alert_id FROM alert_history WHERE compressor_id = "
                        "'COMP-0001'")[0][0]
    assert (await _sign_in(rig.http)).status_code == 303
    page = (await rig.http.get(href(alert_id))).text
    assert "class='limit warning' data-value='8.0'" in page
    assert "class='limit critical' data-value='12.0'" in page
    no_data = (await rig.http.get(href(ACME_NO_DATA))).text
    assert "COMP-0002 data missing WARNING no data for 5 h" in no_data
    assert "no data for 5 h (limit 3 h)" in no_data
    assert "rpm" not in no_data.split("<svg")[0]            # never "speed 5 rpm"
    assert "class='limit" not in no_data                    # hours are not a speed level
    listing = (await rig.http.get("/console/alerts")).text
    assert "data missing WARNING" in listing and "no data for 5 h" in listing
    comp = (await rig.http.get("/console/compressors/COMP-0001")).text
    assert "class='limit critical' data-value='12.0'" in comp


async def test_quality_summary_by_check_with_failing_units(rig: WebRig) -> None:
    seed(rig.db_url)
    assert (await _sign_in(rig.http)).status_code == 303
    page = (await rig.http.get("/console/quality")).text
    assert "1 / 2" in page                  # freshness: one of acme's two units passes
    assert "2 / 2" in page                  # completeness
    assert "COMP-0002" in page and "last reading 7 h ago (limit 1 h 15 min)" in page
    assert "silent while running: oil temp" in page
    assert "COMP-0004" not in page and "jacket water" not in page


@pytest.mark.parametrize("path", [f"/console/alerts/{BRAVO_ALERT}",
                                  "/console/compressors/COMP-0003",
                                  "/console/alerts/no-such-alert"])
async def test_another_organizations_data_is_not_found(rig: WebRig, path: str) -> None:
    seed(rig.db_url)
    assert (await _sign_in(rig.http)).status_code == 303
    r = await rig.http.get(path)
    assert r.status_code == 404
    for leak in ("COMP-0003", "oil pressure", "Karnes", "bravo"):
        assert leak not in r.text.replace(path, ""), leak
    # and bravo's own supervisor does see it
    async with httpx.AsyncClient(base_url=rig.base_url) as bravo:
        assert (await _sign_in(bravo, login=BRAVO_LOGIN)).status_code == 303
        mine = await bravo.get(path)
        assert mine.status_code == (404 if "no-such" in path else 200)


def test_users_cli_adds_lists_and_removes(db_url: str, fleet: Any,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    settings = Settings(database_url=db_url)

    def run(*argv: str, stdin: str = "") -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return main(list(argv), settings=settings)

    assert run("users", "add", "--org", "acme", "--login", "Pat@Acme.example", "--name",
               "Pat", "--password-stdin", stdin="long-enough-pass\n") == 0
    assert "created console user pat@acme.example of acme" in capsys.readouterr().out
    assert run("users", "add", "--org", "bravo", "--login", "pat@acme.example", "--name", "P",
               "--password-stdin", stdin="long-enough-pass\n") == 1
    assert "already used by another organization" in capsys.readouterr().err
    assert run("users", "add", "--org", "acme", "--login", "x@acme", "--name", "X",
               "--password-stdin", stdin="short\n") == 1
    assert "at least 10 characters" in capsys.readouterr().err
    assert run("users", "add", "--org", "nosuch", "--login", "x@n", "--name", "X",
               "--password-stdin", stdin="long-enough-pass\n") == 1
    assert "unknown organization 'nosuch'" in capsys.readouterr().err
    assert run("users", "list", "--org", "acme") == 0
    out = capsys.readouterr().out
    assert "pat@acme.example" in out and "never signed in" in out
    stored = run("users", "list", "--org", "bravo")
    assert stored == 0 and "no console users in bravo" in capsys.readouterr().out
    assert run("users", "remove", "--org", "acme", "--login", "pat@acme.example") == 0
    assert run("users", "remove", "--org", "acme", "--login", "pat@acme.example") == 1
    assert "no active console user" in capsys.readouterr().err
    with __import__("psycopg").connect(db_url) as conn:
        (hashed,) = conn.execute("SELECT password_hash FROM console_users").fetchone()
    assert hashed.startswith("$argon2id$") and "long-enough-pass" not in hashed


def test_the_runtime_login_signs_in_and_reads_only_its_organization(db_url: str,
                                                                   fleet: Any) -> None:
    """The web server logs in as the runtime role (no table access outside a tenant): the
    sign-in lookup works through migration 180's function, and the console's reads see one
    organization."""
    from altaviz.app.web import console_store
    from altaviz.core import db
    from tests.security.test_least_privilege import as_role

    seed(db_url)
    with db.connect(db_url) as conn:
        runtime = db.role_names(conn)["runtime"]
    url = as_role(db_url, runtime)
    found = console_store.sign_in_lookup(url, ACME_LOGIN)
    assert found is not None and found["org_id"] == "acme"
    assert found["password_hash"].startswith("$argon2id$")
    assert console_store.sign_in_lookup(url, "nobody@acme.example") is None
    with db.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM console_users")
    user = console_store.session_user(url, "acme", ACME_LOGIN)
    assert user is not None and user["org_name"] == "Acme Midstream"
    assert console_store.session_user(url, "acme", BRAVO_LOGIN) is None
    assert console_store.alert_detail(url, "acme", BRAVO_ALERT) is None
    assert console_store.alert_detail(url, "bravo", BRAVO_ALERT) is not None
    rows, _, choices = console_store.alert_list(url, "acme", console_store.Filters(state=None))
    assert {r["compressor_id"] for r in rows} == {"COMP-0002"}
    assert [v for v, _ in choices["site"]] == ["PB-01"]
    _, failures = console_store.quality_summary(url, "acme")
    assert {f["compressor_id"] for f in failures} == {"COMP-0002"}
    console_store.end_sessions(url, "acme", ACME_LOGIN)
    after = console_store.session_user(url, "acme", ACME_LOGIN)
    assert after is not None and after["session_epoch"] == user["session_epoch"] + 1
