"""`altaviz up` stopped with Ctrl-C and started again: the open alert is still open and still
escalates on time, exactly once (its timer lives in Temporal's state file, not in the process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.pipeline import start_or_update_alert
from altaviz.app.context import App
from altaviz.core import db
from altaviz.core.payloads import Breach
from altaviz.core.settings import load_settings
from tests.conftest import two_tenant_fleet

ESCALATION_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_up(env: dict[str, str], fleet: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "altaviz.app.cli", "up", "--fleet", str(fleet)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Ctrl-C to stop" in line:
            return proc
    proc.kill()
    raise AssertionError("altaviz up did not become ready:\n" + "".join(seen))


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    return out


def _escalations(db_url: str) -> list[tuple[Any, ...]]:
    with db.connect(db_url) as conn, db.admin(conn):
        return conn.execute(
            "SELECT a.opened_at, a.escalated_at, a.severity,"
            " (SELECT count(*) FROM alert_events e WHERE e.alert_id = a.alert_id"
            "  AND e.event_type = 'escalated') FROM alert_history a").fetchall()


async def test_up_restart_keeps_open_alerts_and_their_timers(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(two_tenant_fleet().model_dump_json())
    temporal_port = _free_port()
    env = {**os.environ,
           "ALTAVIZ_DATA_DIR": str(tmp_path / "data"),
           "ALTAVIZ_TEMPORAL_PORT": str(temporal_port),
           "ALTAVIZ_TEMPORAL_UI_PORT": str(_free_port()),
           "ALTAVIZ_HTTP_PORT": str(_free_port()),
           "ALTAVIZ_TASK_QUEUE": "up-restart",
           "ALTAVIZ_LINK_SECRET": "test-secret-for-up-restart-83f1c6e2a9d4b0"}
    up = _start_up(env, fleet)
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("ALTAVIZ_")})
    app = App(settings=settings)  # attaches to the running PostgreSQL only
    try:
        db_url = app.owner_database_url()
        # the worker and the web server log in as the runtime login, never as the superuser
        with db.connect(db_url, autocommit=True) as conn:
            users = {r[0] for r in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")}
        assert "altaviz_runtime" in users and "postgres" not in users, users
        client = await Client.connect(f"127.0.0.1:{temporal_port}",
                                      data_converter=pydantic_data_converter)
        breach = Breach(org_id="acme", compressor_id="COMP-0001", site_id="PB-01",
                        rule_id="vibration_frame_high", metric="vibration_frame_mm_s",
                        value=9.1, threshold=8.0, severity="warning",
                        hour=datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                        - timedelta(hours=1),
                        escalation_delay_hours=ESCALATION_S / 3600)
        await start_or_update_alert(client, breach, task_queue="up-restart")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _escalations(db_url):
            await asyncio.sleep(0.5)
        assert len(_escalations(db_url)) == 1, "the alert was not opened"

        out = _stop(up)  # Ctrl-C: the worker, the server and (last user) Temporal stop
        assert "stopping" in out
        assert _escalations(db_url)[0][1] is None, "escalated while nobody was running"

        up = _start_up(env, fleet)
        # the escalation is due at once; its row follows through the alert's outbox, whose
        # write a stop can leave waiting on its back-off (at most 5 minutes, OPERATIONS "When
        # PostgreSQL is down"); the escalation's own time is checked below
        deadline = time.monotonic() + ESCALATION_S + 90 + 300
        rows = _escalations(db_url)
        while time.monotonic() < deadline and rows[0][1] is None:
            await asyncio.sleep(1)
            rows = _escalations(db_url)
        opened_at, escalated_at, severity, escalated_events = rows[0]
        assert escalated_at is not None, "the alert did not escalate after the restart"
        assert severity == "critical" and escalated_events == 1
        assert escalated_at - opened_at >= timedelta(seconds=ESCALATION_S)
        await asyncio.sleep(3)
        assert _escalations(db_url)[0][3] == 1, "escalated twice"
    finally:
        if up.poll() is None:
            _stop(up)
        app.close()
