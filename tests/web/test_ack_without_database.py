"""An acknowledgement link while the web server cannot reach PostgreSQL: the signed link names
the alert, so its workflow is asked directly and decides (before: HTTP 500)."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from altaviz.app.web import create_app
from altaviz.core.payloads import AlertState
from tests.notify.receivers import free_port
from tests.web.conftest import WebRig, serve

#: Nothing listens on port 1: every connection is refused, as with a stopped server.
DEAD_DATABASE = "postgresql://altaviz@127.0.0.1:1/altaviz?connect_timeout=2"


async def test_ack_link_works_while_postgresql_is_unreachable(rig: WebRig) -> None:
    port = free_port()

    async def temporal() -> Client:
        return rig.client

    app = create_app(database_url=DEAD_DATABASE, signer=rig.signer, temporal=temporal,
                     ack_timeout=5.0)
    server, task = await serve(app, port)
    try:
        async with rig.worker(), httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            handle = await rig.open_alert("critical")
            # a short link needs the database to be read: a clear "try again", nothing else
            short = await http.get(rig.ack_link("tech-a"))
            assert short.status_code == 503 and "Try again in a minute" in short.text
            # a long link names everything itself
            token = rig.ack_token("tech-a")
            page = await http.get(f"/ack/{token}")
            assert page.status_code == 200, page.text
            assert "Confirm acknowledgement" in page.text and "COMP-0001" in page.text
            assert (await handle.query("state", result_type=AlertState)).ack_state == \
                "unacknowledged"
            done = await http.post(f"/ack/{token}")
            assert done.status_code == 200, done.text
            assert "Acknowledged" in done.text and "Thank you" in done.text
            state = await handle.query("state", result_type=AlertState)
            other = await http.post(f"/ack/{rig.ack_token('sup-a')}")
    finally:
        server.should_exit = True
        await task
    assert (state.ack_state, state.acknowledged_by, state.ack_channel) == (
        "acknowledged", "tech-a", "link")
    assert other.status_code == 409 and "acknowledged by tech-a" in other.text
    # the worker's own database was up: the transition is recorded once
    assert rig.rows("SELECT actor FROM alert_events WHERE event_type = 'acknowledged'") == [
        ("tech-a",)]
