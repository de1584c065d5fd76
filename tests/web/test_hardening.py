"""The server never builds a response header from the client's Host header, and every response
(pages, JSON, 404s, crashes) carries the Content-Security-Policy and the security headers."""

from __future__ import annotations

from typing import Any

import httpx

from altaviz.app.web import create_app
from altaviz.app.web.app import SECURITY_HEADERS
from altaviz.core.links import LinkSigner
from tests.notify.receivers import free_port
from tests.web.conftest import SECRET, WebRig, serve

EVIL = "evil.example"


def _check(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    for name, value in response.headers.items():
        assert EVIL not in value.lower(), f"{where}: {name}: {value}"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{where}: {name} missing"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]


async def test_host_header_never_reflected_and_every_response_secured(rig: WebRig) -> None:
    async with rig.worker():
        await rig.open_alert()
    token = rig.ack_link()
    view = rig.signer.issue(org_id="acme", alert_id="x", contact_id="sup-a", action="view")
    host = {"Host": EVIL}
    responses = [await rig.http.request(method, path, headers=host, params=params)
                 for method, path, params in [
                     ("GET", token, None), ("GET", f"{token}/", None),
                     ("POST", f"{token}/", None), ("GET", "/ack/v1.bad.token", None),
                     ("GET", f"/ack/{rig.ack_token()}/", None),
                     ("GET", "/alerts/x/", {"token": view}), ("GET", "/alerts/x", {"token": ""}),
                     ("GET", "/healthz", None), ("GET", "/healthz/", None), ("GET", "/", None),
                     ("GET", "/inbox/", None), ("GET", "/inbox", None),
                     ("GET", "/nothing/here/", None), ("PUT", "/healthz", None)]]
    statuses = {r.status_code for r in responses}
    assert 200 in statuses and 404 in statuses
    for r in responses:
        _check(r)
        location = r.headers.get("location", "/")
        assert location.startswith("/") and not location.startswith("//"), location
    # the confirm page still works under the policy: its form posts to this server
    page = responses[0]
    assert page.status_code == 200 and f"action='{token}'" in page.text


async def test_a_failure_still_carries_the_headers(db_url: str, fleet: Any) -> None:
    """Neither PostgreSQL nor Temporal reachable: the error answer carries the headers too."""

    async def no_temporal() -> Any:
        raise RuntimeError("connection refused")

    port = free_port()
    app = create_app(database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
                     signer=LinkSigner(SECRET), temporal=no_temporal)
    server, task = await serve(app, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            token = LinkSigner(SECRET).issue(org_id="acme", alert_id="a", contact_id="t",
                                             action="ack")
            r = await http.get(f"/ack/{token}", headers={"Host": EVIL})
            assert r.status_code >= 500
            _check(r)
    finally:
        server.should_exit = True
        await task


async def test_trailing_slash_redirects_to_the_configured_public_url(
        db_url: str, fleet: Any) -> None:
    """A link with a slash added (some mail clients do) still opens, and the redirect goes to
    the configured public URL, whatever Host header the request names."""

    async def no_temporal() -> Any:
        raise RuntimeError("connection refused")

    app = create_app(database_url=db_url, signer=LinkSigner(SECRET), temporal=no_temporal,
                     public_url="https://alerts.example.com/")
    token = LinkSigner(SECRET).issue(org_id="acme", alert_id="a", contact_id="t", action="ack")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1") as http:
        for path, target in [(f"/ack/{token}/", f"/ack/{token}"),
                             ("/a/acme/8vfu0KdbVl-n8Mr05YUJqtKx/",
                              "/a/acme/8vfu0KdbVl-n8Mr05YUJqtKx"),
                             ("/healthz/", "/healthz")]:
            r = await http.get(path, headers={"Host": EVIL})
            assert r.status_code == 308, (path, r.text)
            assert r.headers["location"] == f"https://alerts.example.com{target}"
            _check(r)
        r = await http.get("/nothing/here/", headers={"Host": EVIL})
        assert r.status_code == 404 and "location" not in r.headers
