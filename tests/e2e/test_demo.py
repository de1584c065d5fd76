"""End to end: the demo, non-interactively, on fresh embedded services.

Asserts what the demo is for: alerts raised for the injected faults, at least one promotion to
critical, notifications delivered (once each), and one acknowledgement through its link over
real HTTP reaching the workflow, alert_history and alert_events.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from altaviz.app.context import App
from altaviz.app.demo import DemoOptions, format_report, run_demo
from altaviz.core import db
from altaviz.core.links import find_short_link, signer_from_settings
from altaviz.core.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def demo_app(tmp_path: Path) -> Any:
    settings = load_settings(environ={
        "ALTAVIZ_DATA_DIR": str(tmp_path / "data"),
        "ALTAVIZ_TEMPORAL_PORT": str(_free_port()),
        "ALTAVIZ_TEMPORAL_UI_PORT": str(_free_port()),
        "ALTAVIZ_HTTP_PORT": str(_free_port()),
        "ALTAVIZ_TASK_QUEUE": f"e2e-{_free_port()}",
    })
    app = App(settings=settings)
    yield app
    app.close()


async def test_demo_end_to_end(demo_app: App) -> None:
    options = DemoOptions(compressors=10, days=6, seed=11, fault_share=0.4,
                          escalation_minutes=0.25, wait_for_escalation_s=90)
    lines: list[str] = []
    runtime, report = await run_demo(demo_app, options, say=lines.append)
    try:
        summary = format_report(report)
        db_url = demo_app.owner_database_url()
        with db.connect(db_url) as conn, db.admin(conn):
            alerts = conn.execute(
                "SELECT alert_id, org_id, compressor_id, rule_id, severity, state, workflow_id,"
                " escalated_at FROM alert_history").fetchall()
            inbox = conn.execute("SELECT mailbox, title, body FROM demo_inbox").fetchall()
            sent = conn.execute("SELECT count(*) FROM notifications WHERE status = 'sent'"
                                ).fetchone()
        # Alerts were raised for injected faults, and the faults were caught before failure.
        faulty = {f.compressor_id for f in report.faults}
        assert faulty, summary
        alerted = {a[2] for a in alerts}
        assert faulty & alerted, summary
        assert any(f.caught for f in report.faults), summary
        # Alerts on healthy units are broken down by the rule that raised them.
        assert ("  by rule: " in summary) == bool(report.false_alerts_by_rule), summary
        # At least one unacknowledged warning was promoted to critical.
        assert report.escalated >= 1 and any(a[7] is not None for a in alerts), summary
        # Notifications were delivered to the inbox, each delivery exactly once (a delivery
        # still in flight reaches the inbox just before its row: read both until they settle).
        for _ in range(30):
            if sent is not None and len(inbox) == sent[0]:
                break
            await asyncio.sleep(1)
            with db.connect(db_url) as conn, db.admin(conn):
                inbox = conn.execute("SELECT mailbox, title, body FROM demo_inbox").fetchall()
                sent = conn.execute("SELECT count(*) FROM notifications WHERE status = 'sent'"
                                    ).fetchone()
        assert sent is not None and sent[0] > 0
        assert len(inbox) == sent[0], "inbox messages != recorded deliveries"
        # Nothing duplicated: at most one unresolved alert per workflow id.
        open_ids = [a[6] for a in alerts if a[5] != "resolved"]
        assert len(open_ids) == len(set(open_ids))
        # The simulator's planned stops were entered as maintenance windows: no alert opened
        # in an hour one of them touches, and the summary counts what was held back.
        with db.connect(db_url) as conn, db.admin(conn):
            windows, inside = conn.execute(
                "SELECT (SELECT count(*) FROM maintenance_windows), count(*)"
                " FROM alert_history a JOIN maintenance_windows w ON w.org_id = a.org_id"
                " AND w.compressor_id = a.compressor_id"
                " AND a.breach_hour >= date_trunc('hour', w.starts_at)"
                " AND a.breach_hour < w.ends_at").fetchone() or (0, 0)
        assert windows > 0 and inside == 0, summary
        assert "held back: " in summary

        # One acknowledgement through its link, over real HTTP.
        open_alerts = {a[0] for a in alerts if a[5] == "open"}
        signer = signer_from_settings(demo_app.settings, demo=True)
        link = None
        for _, _, body in inbox:
            for url, org, code in re.findall(
                    r"(https?://\S+/a/([a-z0-9_-]+)/([A-Za-z0-9_-]{24}))(?:\s|$)", body):
                with db.connect(db_url) as conn, db.tenant(conn, org):
                    record = find_short_link(conn, code)
                claims = signer.verify_short(org, code, record, action="ack")
                if claims.alert_id in open_alerts:
                    link = url
                    break
            if link:
                break
        assert link is not None, "no ack link for an open alert in the inbox"
        async with httpx.AsyncClient(timeout=30) as http:
            page = await http.get(link)
        assert page.status_code == 200 and "<form" in page.text
        with db.connect(db_url) as conn, db.admin(conn):
            assert conn.execute("SELECT count(*) FROM alert_history WHERE ack_state ="
                                " 'acknowledged'").fetchone() == (0,), "GET changed state"
        async with httpx.AsyncClient(timeout=60) as http:
            confirm = await http.post(link)
            again = await http.post(link)
        assert confirm.status_code == 200, confirm.text[:500]
        assert again.status_code == 409
        with db.connect(db_url) as conn, db.admin(conn):
            acked = conn.execute(
                "SELECT a.alert_id, a.ack_channel, "
                " (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.alert_id"
                "   AND e.event_type = 'acknowledged')"
                " FROM alert_history a WHERE a.ack_state = 'acknowledged'").fetchall()
        assert len(acked) == 1 and acked[0][1] == "link" and acked[0][2] == 1

        # The demo's supervisor signs in to the console and sees the acknowledgement.
        login, password = report.console_logins[0]
        assert f"sign in as {login}" in summary
        org = login.split("@", 1)[1]
        async with httpx.AsyncClient(base_url=report.console_url.removesuffix("/console"),
                                     timeout=60) as http:
            signed = await http.post("/console/sign-in", data={
                "login": login, "password": password, "next": ""})
            assert signed.status_code == 303, signed.text[:500]
            listing = await http.get("/console/alerts", params={"state": "all"})
            assert listing.status_code == 200 and "alerts shown" in listing.text
            own = [a[0] for a in alerts if a[1] == org]
            if acked[0][0] in own:
                page = await http.get(f"/console/alerts/{acked[0][0]}")
                assert page.status_code == 200 and "Acknowledged by" in page.text
            foreign = [a[0] for a in alerts if a[1] != org]
            if foreign:
                assert (await http.get(f"/console/alerts/{foreign[0]}")).status_code == 404
    finally:
        await runtime.stop()
