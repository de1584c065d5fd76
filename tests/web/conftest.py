"""Fixtures of the web tests: the real AlertWorkflow with its persistence activities and the
real notify activity on a time-skipping Temporal server, and the FastAPI app served by uvicorn
on a free port. Notifications go to the server's own demo inbox (Apprise json:// to
/inbox/receive/<contact>), which is exactly how the demo wires it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from psycopg_pool import ConnectionPool
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.holds import HoldActivities
from activities.notify import NotificationActivities
from activities.pipeline import start_or_update_alert
from altaviz.app.web import RedactTokens, create_app
from altaviz.core.contacts import Contact, ContactsFile, load_contacts
from altaviz.core.db import connect
from altaviz.core.links import LinkSigner
from altaviz.core.payloads import Breach
from altaviz.core.policy import PolicyFile
from altaviz.core.settings import Settings
from tests.conftest import start_time_skipping_env
from tests.notify.receivers import free_port
from workflows.alert import AlertWorkflow
from workflows.notify import NotifyStepWorkflow

SECRET = b"web-test-link-secret-abcdef0123456789"
HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)
ACK_LINK = re.compile(r"http://127\.0\.0\.1:\d+(/a/([a-z0-9_-]+)/([A-Za-z0-9_-]{24}))(?:\s|$)")
VIEW_LINK = re.compile(r"History: http://127\.0\.0\.1:\d+(/a/[a-z0-9_-]+/[A-Za-z0-9_-]{24})")


@pytest.fixture(scope="session")
async def web_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping_env()
    yield env
    await env.shutdown()


def breach(severity: str = "critical") -> Breach:
    return Breach(org_id="acme", compressor_id="COMP-0001", site_id="PB-01",
                  rule_id="vibration_frame_high", metric="vibration_frame_mm_s", value=12.6,
                  threshold=12.0 if severity == "critical" else 8.0,
                  severity=severity, hour=HOUR, rule_version=1,
                  escalation_delay_hours=4.0, diagnosis="bearing wear suspected")


@dataclass
class WebRig:
    env: WorkflowEnvironment
    db_url: str
    queue: str
    pool: ConnectionPool[Any]
    signer: LinkSigner
    base_url: str
    http: httpx.AsyncClient

    @property
    def client(self) -> Client:
        return self.env.client

    @contextlib.asynccontextmanager
    async def worker(self, **options: Any) -> AsyncIterator[Worker]:
        """A running worker; on leaving, the server settles first (notification steps run
        beside the alert, and one left in flight would stall the test server's clock)."""
        async with self._worker(**options) as w:
            yield w
            await self.env.sleep(timedelta(seconds=1))

    def _worker(self, policy: PolicyFile | None = None, **options: Any) -> Worker:
        acts = AlertActivities(self.pool)
        notify = NotificationActivities(
            self.db_url, Settings(public_url=self.base_url), signer=self.signer, policy=policy)
        return Worker(self.client, task_queue=self.queue,
                      workflows=[AlertWorkflow, NotifyStepWorkflow],
                      activities=[acts.open_alert, acts.record_transition,
                                  acts.record_transitions, acts.record_delivery_failure,
                                  HoldActivities(self.pool).check_silence, *notify.all()],
                      activity_executor=ThreadPoolExecutor(4), **options)

    async def open_alert(self, severity: str = "critical") -> WorkflowHandle[Any, Any]:
        """A breach through the real pipeline entry point; returns once tech-a has his mail."""
        handle = await start_or_update_alert(self.client, breach(severity), task_queue=self.queue,
                                             reminder_minutes=0)
        await self.wait_for(lambda: self.inbox("tech-a"))
        return handle

    def inbox(self, mailbox: str) -> list[tuple[str, str]]:
        return self.rows("SELECT title, body FROM demo_inbox WHERE mailbox = %s "
                         "ORDER BY message_id", mailbox)

    def ack_link(self, mailbox: str = "tech-a") -> str:
        """The path of the short acknowledgement link in the mailbox's last message."""
        m = ACK_LINK.search(self.inbox(mailbox)[-1][1])
        assert m is not None
        return m.group(1)

    def ack_token(self, mailbox: str = "tech-a") -> str:
        """A long (self-contained) token for the same alert and recipient as the mailbox's
        last short link: what links sent before short links existed carry."""
        m = ACK_LINK.search(self.inbox(mailbox)[-1][1])
        assert m is not None
        [(org_id, alert_id, contact_id)] = self.rows(
            "SELECT org_id, alert_id, contact_id FROM short_links WHERE short_id = %s",
            m.group(3)[:12])
        return self.signer.issue(org_id=org_id, alert_id=alert_id, contact_id=contact_id,
                                 action="ack")

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def snapshot(self) -> tuple[Any, ...]:
        """Everything an acknowledgement could change in PostgreSQL."""
        return (self.rows("SELECT state, ack_state, acknowledged_by, seq FROM alert_history"),
                self.rows("SELECT count(*) FROM alert_events"),
                self.rows("SELECT token_id, outcome FROM link_tokens_used ORDER BY 1"))

    async def wait_for(self, check: Any, timeout: float = 20.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = check()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.1)


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


@pytest.fixture
async def rig(web_env: WorkflowEnvironment, db_url: str, fleet: Any) -> AsyncIterator[WebRig]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    inbox_url = f"json://127.0.0.1:{port}/inbox/receive"
    with connect(db_url) as conn:
        load_contacts(conn, ContactsFile(contacts=(
            Contact(org_id="acme", contact_id="tech-a", name="Jo Rivera", role="technician",
                    sites=("PB-01",), apprise_urls=(f"{inbox_url}/tech-a",)),
            Contact(org_id="acme", contact_id="sup-a", name="Sam Okafor", role="supervisor",
                    apprise_urls=(f"{inbox_url}/sup-a",)),
        )))
    signer = LinkSigner(SECRET)

    async def temporal() -> Client:
        return web_env.client

    app = create_app(database_url=db_url, signer=signer, temporal=temporal,
                     temporal_ui_url="http://127.0.0.1:8233", inbox=True, ack_timeout=1.5,
                     secure_cookies=False)
    redact = RedactTokens()
    import logging
    logging.getLogger("uvicorn.access").addFilter(redact)
    server, task = await serve(app, port)
    pool: ConnectionPool[Any] = ConnectionPool(db_url, min_size=1, max_size=4, open=True)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            yield WebRig(web_env, db_url, f"web-{uuid.uuid4().hex[:10]}", pool, signer, base,
                         http)
    finally:
        # the workflow id is the same in every test (one session server): end this test's run
        with contextlib.suppress(Exception):
            await web_env.client.get_workflow_handle(
                "alert/acme/COMP-0001/vibration_frame_high").terminate("test over")
        server.should_exit = True
        await task
        pool.close()
        logging.getLogger("uvicorn.access").removeFilter(redact)
