"""A notification endpoint down for a long time: first it hangs (the request times out), then
it answers 500, then it recovers. A second channel of the same contact is healthy.

Runs the real ``notify`` activity under the production retry policy of the alert workflow
(``workflows.alert._NOTIFY_RETRY``: 5 s doubling to 5 min, 20 attempts) on the time-skipping
server, so the ~15 minutes of backoff take seconds of wall time while the server's clock proves
the backoff happened. Expected: every attempt recorded in ``notifications`` with its error,
the healthy channel delivered exactly once (on the first attempt), and exactly one delivery on
the recovered endpoint. tests/notify covers the short "fails twice" case.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.notify import NotificationActivities
from altaviz.core.contacts import Contact, ContactsFile, load_contacts
from altaviz.core.links import LinkSigner
from altaviz.core.payloads import NotifyRequest, NotifyResult
from altaviz.core.settings import Settings
from tests.notify.conftest import SECRET, insert_alert
from tests.notify.receivers import SmtpSink, smtp_sink
from workflows.alert import _NOTIFY_RETRY

HANGS, ERRORS = 3, 5   # 3 timeouts, then 5 x HTTP 500, then healthy: 9 attempts


@dataclass
class FlakyEndpoint:
    """An HTTP endpoint that hangs ``hang`` times, answers 500 ``errors`` times, then 200."""

    hang: int
    errors: int
    port: int = 0
    attempts: list[tuple[float, str]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def flaky_endpoint(hang: int, errors: int) -> Iterator[FlakyEndpoint]:
    ep = FlakyEndpoint(hang, errors)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                n = len(ep.attempts)
                mode = "hang" if n < ep.hang else "500" if n < ep.hang + ep.errors else "ok"
                ep.attempts.append((time.monotonic(), mode))
            if mode == "hang":
                ep.release.wait(5)  # longer than the client's read timeout
                return
            if mode == "ok":
                ep.delivered.append(json.loads(body))
            self.send_response(200 if mode == "ok" else 500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ep.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ep
    finally:
        ep.release.set()
        server.shutdown()
        server.server_close()


@workflow.defn(name="NotifyProductionRetry", sandboxed=False)
class NotifyProductionRetry:
    """Runs the notify activity exactly as AlertWorkflow does (same timeout and retry)."""

    @workflow.run
    async def run(self, req: NotifyRequest) -> NotifyResult:
        return await workflow.execute_activity(
            "notify", req, result_type=NotifyResult,
            start_to_close_timeout=timedelta(minutes=2), retry_policy=_NOTIFY_RETRY)


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    path = shutil.which("temporal-test-server") or shutil.which(
        "temporal-test-server", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip("temporal-test-server is not installed")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter)
    yield env
    await env.shutdown()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


async def test_long_outage_with_timeouts_and_500s_then_one_delivery(
        ts_env: WorkflowEnvironment, conn: psycopg.Connection[Any], fleet: Any,
        smtp: SmtpSink, tmp_path: Any) -> None:
    with flaky_endpoint(HANGS, ERRORS) as ep:
        # rto/cto: Apprise's read/connect timeouts, short so that a hang is a timeout quickly
        url = f"json://127.0.0.1:{ep.port}/acme/tech-a?rto=0.5&cto=0.5"
        load_contacts(conn, ContactsFile(contacts=(Contact(
            org_id="acme", contact_id="tech-a", name="Jo Rivera", role="technician",
            sites=("PB-01",), apprise_urls=(url, smtp.url("tech-a@example.com"))),)))
        alert = insert_alert(conn)
        acts = NotificationActivities(conn.info.dsn, Settings(
            data_dir=tmp_path, public_url="https://alerts.example.com"),
            signer=LinkSigner(SECRET))
        queue = f"outage-{uuid.uuid4().hex[:8]}"
        scheduled: list[tuple[int, Any]] = []

        @activity.defn(name="notify")
        async def notify(req: NotifyRequest) -> NotifyResult:
            """The real activity, recording when the server scheduled each attempt."""
            info = activity.info()
            scheduled.append((info.attempt, info.current_attempt_scheduled_time))
            return await acts.notify(req)

        wall = time.monotonic()
        async with Worker(ts_env.client, task_queue=queue, workflows=[NotifyProductionRetry],
                          activities=[notify],
                          workflow_runner=UnsandboxedWorkflowRunner()):
            result = await ts_env.client.execute_workflow(
                "NotifyProductionRetry", NotifyRequest(
                    alert=alert, step="opened", audience="technicians", event="opened"),
                id=f"outage-{uuid.uuid4().hex}", task_queue=queue, result_type=NotifyResult)
        wall_elapsed = time.monotonic() - wall

    attempts = HANGS + ERRORS + 1
    assert result.delivered == 2 and result.failed == 0
    assert [m for _, m in ep.attempts] == ["hang"] * HANGS + ["500"] * ERRORS + ["ok"]
    assert len(ep.delivered) == 1                 # exactly one delivery after recovery
    assert len(smtp.messages) == 1                # the healthy channel: once, meanwhile
    rows = conn.execute("SELECT channel, attempt, status, error FROM notifications "
                        "ORDER BY channel, attempt").fetchall()
    json_rows = [r for r in rows if r[0] == "json"]
    assert [(r[1], r[2]) for r in json_rows] == \
        [(i, "failed") for i in range(1, attempts)] + [(attempts, "sent")]
    assert all(r[3] for r in json_rows[:-1]) and json_rows[-1][3] is None  # errors recorded
    assert str(ep.port) not in " ".join(r[3] for r in json_rows[:-1])     # URL scrubbed
    assert [(r[1], r[2]) for r in rows if r[0] == "mailto"] == [(1, "sent")]
    # backoff per the production policy, on the server's clock: 5, 10, 20, ... capped at 300 s
    assert [a for a, _ in scheduled] == list(range(1, attempts + 1))
    gaps = [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(scheduled)]
    # (an attempt's scheduled time is when the previous one failed; the backoff it waited
    # shows up in the next gap)
    expected = [min(5 * 2**i, 300) for i in range(attempts - 2)]
    assert all(e <= g <= e + 5 for g, e in zip(gaps[1:], expected, strict=True)), \
        (gaps, expected)
    outage = sum(gaps)
    assert outage >= 600  # an outage of over ten minutes, ridden out
    print(f"outage: {attempts} attempts, gaps {gaps} s (server clock, {outage:.0f} s in all), "
          f"wall {wall_elapsed:.1f} s, errors: {[r[3][:60] for r in json_rows[:2]]}")
