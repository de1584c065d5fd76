"""``alerts ack`` and ``alerts resolve`` while the alert's workflow cannot answer (no worker
polls its queue: the update waits like one sent to a busy workflow): one line each, no
traceback; the acknowledgement is queued and exits 0; the
resolution, which has no durable fallback, exits 1 saying it is not applied yet. (That the
queued signal is applied once a worker returns is tests/workflows/test_durability.py's
``signal_ack_without_worker_applies_when_a_worker_returns``.)

Runs on a time-skipping server and a task queue of its own (nothing shared with other tests).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from altaviz.app.cli import main
from altaviz.app.commands import alerts as alerts_command
from altaviz.core.payloads import AlertState
from tests.conftest import start_time_skipping_env
from tests.workflows.conftest import NotifyRecorder, Rig, make_breach
from workflows.alert import QUERY_STATE


async def test_ack_and_resolve_against_a_workflow_that_cannot_answer(
        db_url: str, fleet: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    env = await start_time_skipping_env()
    pool: ConnectionPool[Any] = ConnectionPool(db_url, min_size=1, max_size=4, open=True)
    rig = Rig(env, f"busy-{uuid.uuid4().hex[:10]}", pool, NotifyRecorder(), db_url)
    try:
        async with rig.running():
            handle = await rig.breach(make_breach())
            await env.sleep(timedelta(minutes=6))
            alert_id = (await handle.query(QUERY_STATE, result_type=AlertState)).alert_id
        # the command's waits, shortened: what is tested is what happens when they run out
        monkeypatch.setattr(alerts_command, "UPDATE_TIMEOUT", timedelta(seconds=2))
        monkeypatch.setattr(alerts_command, "BUSY_GRACE", timedelta(seconds=3))
        monkeypatch.setenv("ALTAVIZ_DATABASE_URL", db_url)
        monkeypatch.setenv("ALTAVIZ_TEMPORAL_ADDRESS", env.client.service_client.config.target_host)
        capsys.readouterr()

        code = await asyncio.to_thread(main, ["alerts", "ack", alert_id, "--by", "tech.jane"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert len(captured.out.strip().splitlines()) == 1
        assert "queued" in captured.out and "Traceback" not in captured.err

        code = await asyncio.to_thread(main, ["alerts", "resolve", alert_id, "--by", "sup.bob",
                                              "--reason", "valve replaced"])
        captured = capsys.readouterr()
        assert code == 1
        errors = [line for line in captured.err.splitlines() if line.startswith("altaviz:")]
        assert len(errors) == 1 and "not resolved yet" in errors[0]
        assert "Traceback" not in captured.err

    finally:
        for wid in rig.started:
            try:
                await env.client.get_workflow_handle(wid).terminate("test finished")
            except Exception:
                pass
        pool.close()
        await env.shutdown()
