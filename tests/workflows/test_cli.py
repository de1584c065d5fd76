"""``altaviz alerts list|show|ack|resolve`` against real PostgreSQL and the test server."""

from __future__ import annotations

import asyncio
import re

import pytest

from altaviz.app.cli import main
from altaviz.app.commands.alerts import readable
from altaviz.core.payloads import AlertState
from tests.workflows.conftest import Rig, hours, make_breach
from workflows.alert import QUERY_STATE


@pytest.fixture
def cli_env(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Rig:
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", rig.db_url)
    monkeypatch.setenv("ALTAVIZ_TEMPORAL_ADDRESS",
                       rig.client.service_client.config.target_host)
    return rig


async def altaviz(*argv: str) -> int:
    # The CLI runs its own event loop: give it a thread.
    return await asyncio.to_thread(main, list(argv))


async def test_list_show_ack_resolve(cli_env: Rig, capsys: pytest.CaptureFixture[str]):
    rig = cli_env
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(0.1))
        alert_id = (await handle.query(QUERY_STATE, result_type=AlertState)).alert_id
        capsys.readouterr()

        assert await altaviz("alerts", "list", "--org", "acme") == 0
        out = capsys.readouterr().out
        assert alert_id in out and "warning" in out and "open" in out
        header, line = out.splitlines()[:2]
        # aligned columns: every header starts where its value starts
        assert line.index("warning") == header.index("severity")
        assert line.index("open") == header.index("state")
        assert "breach (UTC)" in header and "2026-03-02 10:00" in line     # the breach hour
        assert await altaviz("alerts", "list", "--org", "bravo") == 0
        assert capsys.readouterr().out.strip() == "no alerts"
        assert await altaviz("alerts", "list", "--org", "nosuch") == 1
        err = capsys.readouterr().err
        # log records (the superuser-login warning of this test database) may precede it
        errors = [line for line in err.splitlines() if not line.startswith("20")]
        assert errors == ["altaviz: error: unknown organization 'nosuch': `altaviz fleet` "
                          "lists them"]

        # Another organization cannot even see it (row-level security).
        assert await altaviz("alerts", "ack", alert_id, "--by", "eve", "--org", "bravo") == 1
        assert "no alert" in capsys.readouterr().err

        assert await altaviz("alerts", "ack", alert_id, "--by", "tech.jane",
                             "--comment", "valve cap hot") == 0
        assert "acknowledged" in capsys.readouterr().out
        assert await altaviz("alerts", "ack", alert_id, "--by", "tech.joe") == 1
        err = "\n".join(line for line in capsys.readouterr().err.splitlines()
                        if not line.startswith("20"))    # log records aside
        assert "already acknowledged by tech.jane" in err
        assert len(err.strip().splitlines()) == 1 and "Error" not in err
        assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", err)        # no microseconds

        assert await altaviz("alerts", "resolve", alert_id, "--by", "sup.bob",
                             "--reason", "valve replaced") == 0
        assert "resolved" in capsys.readouterr().out
        await rig.env.sleep(hours(0.1))

        assert await altaviz("alerts", "show", alert_id) == 0
        out = capsys.readouterr().out
    for expected in ("event opened", "event acknowledged", "event resolved", "tech.jane",
                     "valve cap hot", "valve replaced", "temporal workflow_execution_started",
                     "update acknowledge", "signal breach", "child NotifyStepWorkflow"):
        assert expected in out, (expected, out)
    assert await altaviz("alerts", "list", "--org", "acme", "--state", "resolved") == 0
    assert alert_id in capsys.readouterr().out


def test_a_workflow_refusal_reads_as_one_plain_line() -> None:
    assert readable("ValueError: rejected: alert alert/acme/COMP-0001/r/20260302T10 was "
                    "already acknowledged by tech.jane at 2026-03-02 10:05:12.123456+00:00") \
        == ("alert alert/acme/COMP-0001/r/20260302T10 was already acknowledged by tech.jane "
            "at 2026-03-02 10:05 UTC")
    assert readable("rejected: alert a is already resolved") == "alert a is already resolved"


async def test_ack_and_resolve_without_postgresql(cli_env: Rig, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]):
    """PostgreSQL unreachable from the CLI: the alert id names its workflow, which decides
    (another organization is refused there) and answers at once."""
    rig = cli_env
    async with rig.running():
        handle = await rig.breach(make_breach())
        await rig.env.sleep(hours(0.1))
        alert_id = (await handle.query(QUERY_STATE, result_type=AlertState)).alert_id
        # nothing listens on port 1: every connection is refused, as with a stopped server
        monkeypatch.setenv("ALTAVIZ_DATABASE_URL",
                           "postgresql://altaviz@127.0.0.1:1/altaviz?connect_timeout=2")
        capsys.readouterr()
        assert await altaviz("alerts", "ack", alert_id, "--by", "eve", "--org", "bravo") == 1
        assert "another organization" in capsys.readouterr().err
        assert await altaviz("alerts", "ack", alert_id, "--by", "tech.jane") == 0
        out, err = capsys.readouterr()
        assert f"acknowledged {alert_id} by tech.jane: now acknowledged" in out
        assert "PostgreSQL is not reachable" in err
        state = await handle.query(QUERY_STATE, result_type=AlertState)
        assert (state.ack_state, state.acknowledged_by, state.ack_channel) == (
            "acknowledged", "tech.jane", "cli")
        assert await altaviz("alerts", "resolve", alert_id, "--by", "sup.bob",
                             "--reason", "valve replaced") == 0
        assert "resolved" in capsys.readouterr().out
        await rig.env.sleep(hours(0.1))
    # the worker's database was up all along: each transition written once (the refused
    # request was refused by the update's validator: nothing to record)
    assert rig.rows("SELECT event_type FROM alert_events ORDER BY (details->>'seq')::int") == [
        ("opened",), ("acknowledged",), ("resolved",)]
