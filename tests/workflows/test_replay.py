"""Replay of recorded alert, notification-step and pipeline histories against the current code.

A code change that would break running alerts (a new activity call, a reordered step, a timer
added or removed) makes the replay fail with a nondeterminism error: wrap such changes in
``workflow.patched("...")`` and record a new history for the changed code. Histories in
``tests/workflows/histories`` are only ever added, never rewritten: ``MANIFEST.sha256`` holds
the hash of each, and a test fails when a listed file changed, disappeared, or a new one is
not listed. To record the histories of a new entry of ``RECORDINGS`` (existing files are left
alone), then list them::

    RECORD_ALERT_HISTORIES=1 .venv/bin/pytest tests/workflows/test_replay.py -k record
    cd tests/workflows/histories && sha256sum NEW_FILE.json >> MANIFEST.sha256
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from altaviz.core.db import tenant
from altaviz.core.payloads import AckRequest, AlertState, PipelineInput, ResolveRequest
from altaviz.core.settings import Settings, etl_queue_of
from etl.models import (
    AggregatesResult,
    BronzeResult,
    GoldResult,
    QualityResult,
    SilverResult,
)
from tests.workflows.changed_workflows import PatchedChange, UnpatchedChange
from tests.workflows.conftest import GRACEFUL, HOUR0, Rig, hours, make_breach, make_clear
from tests.workflows.test_pipeline import load_hours
from worker import build_etl_worker, build_worker, rules_evaluator
from workflows.alert import SIGNAL_HOLDS, UPDATE_ACK, UPDATE_RESOLVE, AlertWorkflow
from workflows.notify import NotifyStepWorkflow, notify_workflow_id
from workflows.pipeline import PipelineWorkflow

HISTORIES = Path(__file__).parent / "histories"
RECORDED_ID = "alert/acme/COMP-0001/discharge_temp_high"
Scenario = Callable[[Rig], Awaitable[WorkflowHandle[Any, Any]]]


def _ack(request_id: str) -> AckRequest:
    return AckRequest(org_id="acme", by="tech.jane", channel="cli", request_id=request_id)


async def escalated_with_reminders(rig: Rig) -> WorkflowHandle[Any, Any]:
    h = await rig.breach(make_breach(), reminder_minutes=60)
    await rig.env.sleep(hours(6.5))
    await h.signal("ack_requested", _ack("a1").model_copy(update={"org_id": "bravo"}))
    await h.execute_update(UPDATE_ACK, _ack("a2"), result_type=AlertState)
    return h


async def acked_then_raised_then_cleared(rig: Rig) -> WorkflowHandle[Any, Any]:
    h = await rig.breach(make_breach())
    await rig.env.sleep(hours(3))
    await h.execute_update(UPDATE_ACK, _ack("a1"), result_type=AlertState)
    await rig.breach(make_breach(HOUR0 + hours(1), value=355))
    await rig.breach(make_breach(HOUR0 + hours(2), severity="critical", value=380))
    await h.signal("clear", make_clear(HOUR0 + hours(6)))
    await h.result()
    return h


async def cleared_unacked_then_ack(rig: Rig) -> WorkflowHandle[Any, Any]:
    h = await rig.breach(make_breach())
    await h.signal("clear", make_clear(HOUR0 + hours(3)))
    await rig.env.sleep(hours(1))
    await rig.breach(make_breach(HOUR0 + hours(4)))     # reactivated
    await h.signal("clear", make_clear(HOUR0 + hours(7)))
    await rig.env.sleep(hours(1))
    await h.execute_update(UPDATE_ACK, _ack("a1"), result_type=AlertState)
    await h.result()
    return h


async def resolved_then_new_breach(rig: Rig) -> WorkflowHandle[Any, Any]:
    h = await rig.breach(make_breach(), max_history_events=30)
    for i in range(1, 8):
        await rig.breach(make_breach(HOUR0 + hours(i), value=340 + i), max_history_events=30)
        await rig.env.sleep(hours(0.05))
    await h.execute_update(UPDATE_RESOLVE, ResolveRequest(
        org_id="acme", by="sup.bob", reason="valve replaced", request_id="r1"),
        result_type=AlertState)
    await rig.env.sleep(hours(0.1))
    return h


async def resumed_critical_reminds(rig: Rig) -> WorkflowHandle[Any, Any]:
    first = await rig.breach(make_breach(), reminder_minutes=60)
    await rig.env.sleep(hours(5.5))
    await first.terminate(reason="operator")
    h = await rig.breach(make_breach(), reminder_minutes=60)   # resumes the open row
    await rig.env.sleep(hours(2.2))
    await h.execute_update(UPDATE_ACK, _ack("a1"), result_type=AlertState)
    return h


async def silenced_then_released(rig: Rig) -> WorkflowHandle[Any, Any]:
    """A silence holds the opening and the promotion to critical back; its end notifies once
    (``patched("silences-and-maintenance-holds")``)."""
    now = await rig.env.get_current_time()
    with rig.pool.connection() as conn, tenant(conn, "acme"):
        conn.execute("INSERT INTO silences (org_id, compressor_ids, starts_at, ends_at,"
                     " created_by, comment) VALUES ('acme', '{COMP-0001}', %s, %s, 'sup.amy',"
                     " 'valve job')", (now, now + hours(2)))
    h = await rig.breach(make_breach(), reminder_minutes=60)
    await rig.env.sleep(hours(0.5))
    await rig.breach(make_breach(HOUR0 + hours(1), severity="critical", value=380),
                     reminder_minutes=60)
    await rig.env.sleep(hours(2))
    await h.execute_update(UPDATE_ACK, _ack("a1"), result_type=AlertState)
    return h


async def silence_expired_by_signal(rig: Rig) -> WorkflowHandle[Any, Any]:
    """A silence expired early, the held alert told by the ``holds_changed`` signal: it is
    released at once, between two re-checks (``patched("holds-changed-signal")``)."""
    now = await rig.env.get_current_time()
    with rig.pool.connection() as conn, tenant(conn, "acme"):
        conn.execute("INSERT INTO silences (org_id, compressor_ids, starts_at, ends_at,"
                     " created_by, comment) VALUES ('acme', '{COMP-0001}', %s, %s, 'sup.amy',"
                     " 'valve job')", (now, now + hours(24)))
    h = await rig.breach(make_breach(), reminder_minutes=60)
    await rig.env.sleep(hours(0.6))
    with rig.pool.connection() as conn, tenant(conn, "acme"):
        conn.execute("UPDATE silences SET ends_at = %s, expired_by = 'sup.amy'",
                     (now + hours(0.6),))
    await h.signal(SIGNAL_HOLDS)
    await rig.env.sleep(hours(0.05))
    await h.execute_update(UPDATE_ACK, _ack("a1"), result_type=AlertState)
    return h


async def pipeline_run(rig: Rig) -> WorkflowHandle[Any, Any]:
    load_hours(rig, "COMP-0001", [300, 335, 340, 342])
    return await rig.client.start_workflow(
        PipelineWorkflow.run, PipelineInput(hour=HOUR0, run_etl=False, reminder_minutes=0),
        id=f"pipeline-{uuid.uuid4().hex[:8]}", task_queue=rig.task_queue)


async def pipeline_run_etl_stages(rig: Rig) -> WorkflowHandle[Any, Any]:
    load_hours(rig, "COMP-0001", [300, 335, 340, 342])
    return await rig.client.start_workflow(
        PipelineWorkflow.run, PipelineInput(hour=HOUR0, run_etl=True, reminder_minutes=0),
        id=f"pipeline-{uuid.uuid4().hex[:8]}", task_queue=rig.task_queue)


def stand_in_stage(stage: str, run_id: str, progress: Callable[[str, float], None]) -> BaseModel:
    """An ETL stage that loads nothing (the recorded history is about the workflow)."""
    progress(stage, 1.0)
    return {"bronze": BronzeResult, "silver": SilverResult, "gold": GoldResult,
            "aggregates": AggregatesResult, "quality": QualityResult}[stage]()


SCENARIOS: dict[str, Scenario] = {
    "pipeline_run_etl_stages": pipeline_run_etl_stages,
    "escalated_with_reminders": escalated_with_reminders,
    "acked_then_raised_then_cleared": acked_then_raised_then_cleared,
    "cleared_unacked_then_ack": cleared_unacked_then_ack,
    "resolved_then_new_breach": resolved_then_new_breach,
    "pipeline_run": pipeline_run,
    "resumed_critical_reminds": resumed_critical_reminds,
    "silenced_then_released": silenced_then_released,
    "silence_expired_by_signal": silence_expired_by_signal,
}

#: Recorded history (file stem) -> the scenario that produced it. The first five were recorded
#: before notification steps became child workflows (``notify`` activity in the alert's own
#: history); the ``_steps`` ones after (``patched("notify-step-child-workflow")``); the
#: ``_outbox`` ones with PostgreSQL as a projection (``patched("projection-outbox")``: the
#: transitions flushed by ``record_transitions`` activities beside the main loop).
RECORDINGS: dict[str, str] = {
    **{name: name for name in SCENARIOS},
    "escalated_with_reminders_steps": "escalated_with_reminders",
    "acked_then_raised_then_cleared_steps": "acked_then_raised_then_cleared",
    "resolved_then_new_breach_steps": "resolved_then_new_breach",
    "escalated_with_reminders_outbox": "escalated_with_reminders",
    "acked_then_raised_then_cleared_outbox": "acked_then_raised_then_cleared",
    "resolved_then_new_breach_outbox": "resolved_then_new_breach",
    "silenced_then_released_outbox": "silenced_then_released",
}

#: Child histories recorded with a scenario: file stem -> (recording, step).
STEP_RECORDINGS: dict[str, tuple[str, str]] = {
    "notify_step_escalated": ("escalated_with_reminders_steps", "escalated"),
}

#: Histories recorded by earlier versions of the workflows, which the current scenarios no
#: longer produce: runs in flight during an upgrade must still replay.
#: ``pipeline_run_etl_one_activity``: the ETL as one ``run_etl`` activity on the workflow's
#: own queue, before the stages became activities on the ETL queue.
LEGACY = {"pipeline_run_etl_one_activity"}


@pytest.mark.skipif(not os.environ.get("RECORD_ALERT_HISTORIES"),
                    reason="set RECORD_ALERT_HISTORIES=1 to record missing histories")
@pytest.mark.parametrize("stem", sorted(RECORDINGS))
async def test_record(rig: Rig, stem: str):
    """Run a scenario and store every run of its workflow (continue-as-new makes several),
    unless its history is already recorded: recorded histories are never rewritten."""
    if (HISTORIES / f"{stem}.json").exists():
        pytest.skip(f"{stem} is recorded (histories are only added)")
    name = RECORDINGS[stem]
    worker = build_worker(rig.client, task_queue=rig.task_queue, pool=rig.pool,
                          notify=rig.notifier.all(), evaluator=rules_evaluator(Settings()),
                          executor=ThreadPoolExecutor(4), **GRACEFUL)
    etl_worker = build_etl_worker(rig.client, task_queue=etl_queue_of(rig.task_queue),
                                  db_url=rig.db_url, stages=stand_in_stage, **GRACEFUL)
    async with worker, etl_worker:
        handle = await SCENARIOS[name](rig)
        if name.startswith("pipeline_run"):
            await handle.result()
        await rig.settle()
        # The first run and, after continue-as-new, the latest one.
        runs = [handle.result_run_id or handle.run_id or ""]
        latest = (await rig.client.get_workflow_handle(handle.id).describe()).run_id
        if latest not in runs:
            runs.append(latest)
        HISTORIES.mkdir(exist_ok=True)
        targets: list[tuple[str, str | None, str]] = [
            (handle.id, rid, f"{stem}{'' if i == 0 else '_run2'}") for i, rid in enumerate(runs)]
        alert_ids = {c.alert.alert_id for c in rig.notifier.calls}
        for child, (parent, step) in STEP_RECORDINGS.items():
            if parent == stem:
                targets += [(notify_workflow_id(a, step), None, child) for a in alert_ids]
        for wid, rid, out in targets:
            history = await rig.client.get_workflow_handle(wid, run_id=rid).fetch_history()
            (HISTORIES / f"{out}.json").write_text(
                json.dumps(json.loads(history.to_json()), indent=1) + "\n")


def _histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded():
    names = {p.stem.removesuffix("_run2") for p in _histories()}
    assert names == set(RECORDINGS) | set(STEP_RECORDINGS) | LEGACY, \
        "record the missing ones with RECORD_ALERT_HISTORIES=1"


def test_histories_are_only_added():
    """Every listed history is unchanged, none disappeared, and every history is listed."""
    listed: dict[str, str] = {}
    for line in (HISTORIES / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.lstrip("*")] = digest
    for name, digest in sorted(listed.items()):
        path = HISTORIES / name
        assert path.exists(), f"{name} was removed: recorded histories are only ever added"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, (
            f"{name} was rewritten: restore it (git checkout) and record the changed code's "
            "behaviour as a new history, behind workflow.patched")
    unlisted = sorted(p.name for p in _histories() if p.name not in listed)
    assert not unlisted, f"list new histories in MANIFEST.sha256: {unlisted}"


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.stem)
async def test_replay(path: Path):
    from temporalio.client import WorkflowHistory

    replayer = Replayer(workflows=[AlertWorkflow, NotifyStepWorkflow, PipelineWorkflow],
                        data_converter=pydantic_data_converter)
    # the recording's own workflow id: alert and step ids are derived from it
    history = WorkflowHistory.from_json(RECORDED_ID, path.read_text())
    await replayer.replay_workflow(history)



async def test_an_unpatched_change_breaks_replay_and_a_patched_one_does_not():
    """The replay test catches incompatible changes; ``workflow.patched`` makes them safe."""
    from temporalio.client import WorkflowHistory

    history = WorkflowHistory.from_json(
        "replay-changed", (HISTORIES / "escalated_with_reminders.json").read_text())
    bad = await Replayer(workflows=[UnpatchedChange], data_converter=pydantic_data_converter
                         ).replay_workflow(history, raise_on_replay_failure=False)
    assert bad.replay_failure is not None and "Nondeterminism" in str(bad.replay_failure)
    ok = await Replayer(workflows=[PatchedChange], data_converter=pydantic_data_converter
                        ).replay_workflow(history, raise_on_replay_failure=False)
    assert ok.replay_failure is None
