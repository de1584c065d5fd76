"""``altaviz pipeline run``: run the hourly pipeline now, through its schedule.

The run is an action of the hourly schedule (``altaviz-hourly-pipeline``), so it is durable
(a worker restart resumes it), appears in the schedule's history like the hourly runs, and
never overlaps one: a run already in progress (hourly or manual) is joined rather than doubled,
and the trigger itself skips when one is running. The command waits for the run and prints
what it did.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode

from altaviz.app.context import App
from altaviz.core.errors import ServiceError
from altaviz.core.payloads import PipelineResult
from workflows import PIPELINE_SCHEDULE_ID


def register(sub: Any) -> None:
    """Add ``pipeline run``."""
    parser = sub.add_parser("pipeline", help="run the pipeline now",
                            description="The hourly pipeline (ETL, rules, alerts).")
    psub = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    p = psub.add_parser(
        "run", help="run the pipeline now through the hourly schedule and print what it did",
        description="Triggers the hourly schedule now (durable, and never two runs at once: a "
                    "run in progress is joined instead), waits for it and prints the files, "
                    "rows and alerts it handled. Needs a running worker (`altaviz up` or "
                    "`altaviz worker`). Examples: `altaviz pipeline run` after dropping files "
                    "into the landing folder or changing a rule; `altaviz pipeline run "
                    "--no-wait`.")
    p.add_argument("--no-wait", action="store_true",
                   help="return once the run has started")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="stop waiting after this long (the run carries on; default 3600)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, app: App) -> int:
    async def go() -> int:
        client = await app.temporal_client()
        wid, joined = await run_now(client)
        print(("joined the pipeline run already in progress: " if joined
               else "started pipeline run ") + wid, flush=True)
        if args.no_wait:
            return 0
        try:
            result = await asyncio.wait_for(
                client.get_workflow_handle(wid, result_type=PipelineResult).result(),
                args.timeout)
        except TimeoutError:
            raise ServiceError(f"run {wid} did not finish within {args.timeout:.0f} s; it "
                               "carries on (is a worker running? `altaviz doctor`)") from None
        print(describe(result))
        return 0

    return asyncio.run(go())


async def run_now(client: Client, schedule_id: str = PIPELINE_SCHEDULE_ID,
                  poll: timedelta = timedelta(milliseconds=200),
                  within: timedelta = timedelta(seconds=60)) -> tuple[str, bool]:
    """Start a run of the schedule now, or find the one in progress.

    Returns:
        The run's workflow id, and whether it was already running (joined, not started).

    Raises:
        ServiceError: no such schedule (no worker ever started), or no run appeared.
    """
    handle = client.get_schedule_handle(schedule_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ServiceError(f"schedule {schedule_id} does not exist: start `altaviz up` or "
                               "`altaviz worker` once (they create it)") from None
        raise
    running = [a.workflow_id for a in desc.info.running_actions
               if isinstance(a, ScheduleActionExecutionStartWorkflow)]
    if running:
        return running[-1], True
    seen = {a.action.workflow_id for a in desc.info.recent_actions
            if isinstance(a.action, ScheduleActionExecutionStartWorkflow)}
    skipped = desc.info.num_actions_skipped_overlap
    # SKIP: if another trigger (or the hourly run) started one in between, this one is dropped
    # and the run found below is that one.
    await handle.trigger(overlap=ScheduleOverlapPolicy.SKIP)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within.total_seconds()
    while loop.time() < deadline:
        desc = await handle.describe()
        # our trigger was skipped: the run found was started by another one
        joined = desc.info.num_actions_skipped_overlap > skipped
        for a in desc.info.running_actions:
            if isinstance(a, ScheduleActionExecutionStartWorkflow):
                return a.workflow_id, joined or a.workflow_id in seen
        for r in reversed(desc.info.recent_actions):
            if (isinstance(r.action, ScheduleActionExecutionStartWorkflow)
                    and r.action.workflow_id not in seen):
                return r.action.workflow_id, joined
        await asyncio.sleep(poll.total_seconds())
    raise ServiceError(f"schedule {schedule_id} started no run within {within}; is it paused? "
                       f"(`temporal schedule describe --schedule-id {schedule_id}`)")


def describe(result: PipelineResult) -> str:
    """What a run did, in one line."""
    etl = result.etl.detail if result.etl else "no ETL"
    return (f"hour {result.hour:%Y-%m-%d %H:00}Z: {etl}; {result.organizations} "
            f"organization(s), {result.breaches} breach(es): {result.alerts_signalled} "
            f"alert(s) opened or updated, {result.breaches_skipped} already covered; "
            f"{result.clears_signalled} clear(s) signalled")
