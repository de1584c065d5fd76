"""The Altaviz worker: the one place that wires real implementations into Temporal.

It registers ``AlertWorkflow`` and ``PipelineWorkflow`` and every activity they call
(persistence, ETL, rule evaluation, dispatch of breaches and clears, and notification) on one
task queue. Several workers on the same queue share the work: Temporal hands each workflow or
activity task to exactly one of them, and every activity is idempotent, so a task retried on
another worker after a crash does no harm.

This module is the composition root: :func:`compose` builds the worker with every real
dependency (connection pool, ETL, rule engine, notifier) and :func:`run_worker` runs it.
``altaviz up``, ``altaviz worker`` and the demo all reach it through
``altaviz.app.runtime.Runtime``, so they run the same wiring; tests build workers with stand-in
stages through :func:`build_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.notify import NotificationActivities
from activities.pipeline import EtlRunner, Evaluator, PipelineActivities
from altaviz.core import db
from altaviz.core.payloads import EtlSummary, Evaluation
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from rules.evaluate import evaluate
from rules.loader import load_rule_set
from rules.store import latest_rule_set, save_rule_set
from workflows.alert import AlertWorkflow
from workflows.pipeline import PipelineWorkflow

log = logging.getLogger("altaviz.worker")

#: ETL changes older than this before the evaluated hour are not re-evaluated by the hourly
#: run (a month-long backfill must not open alerts for last month's readings).
MAX_REEVALUATION = timedelta(hours=24)

#: How often the ETL activity heartbeats while the ETL runs. The pipeline's heartbeat timeout
#: is 5 minutes, and one statement of a long catch-up (the COPY of a week's aggregates) can run
#: longer than that: without beats in between, Temporal would time the attempt out and start
#: another while the first is still working.
ETL_HEARTBEAT_SECONDS = 30.0

#: Size of the worker's PostgreSQL pool and of the thread pool running synchronous activities.
POOL_SIZE = 8


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker is wired, beyond the settings.

    Attributes:
        demo: sign links with the demo's generated secret (no ALTAVIZ_LINK_SECRET needed).
        escalation_override_hours: the demo shortens every rule's escalation delay to this so
            that a promotion happens while people watch; None keeps the rules' own delays.
    """

    demo: bool = False
    escalation_override_hours: float | None = None


def rules_evaluator(settings: Settings,
                    escalation_override_hours: float | None = None) -> Evaluator:
    """The real rule engine (``rules.evaluate``) as the pipeline's evaluator.

    Uses the organization's newest stored rule set, else the newest default set, else loads
    ``settings.rules_file`` and stores it (so ``rule_set_id``/``rule_version`` are always
    stamped on breaches and pinned by the alerts they open).
    """

    def evaluate_org(conn: psycopg.Connection[Any], org_id: str,
                     hours: list[datetime]) -> Evaluation:
        rule_set = latest_rule_set(conn, org_id) or latest_rule_set(conn, None)
        if rule_set is None:
            rule_set = save_rule_set(conn, load_rule_set(settings.rules_file))
        result = evaluate(conn, rule_set, org_id, (min(hours), max(hours)),
                          threads=settings.rules_threads)
        breaches = result.breaches
        if escalation_override_hours is not None:
            breaches = [b.model_copy(update={"escalation_delay_hours": escalation_override_hours})
                        for b in breaches]
        return Evaluation(org_id=org_id, breaches=breaches, clears=result.clears)

    return evaluate_org


@contextlib.contextmanager
def heartbeating(every_s: float) -> Iterator[None]:
    """Heartbeat the current activity from a side thread until the block ends.

    A killed worker stops beating, so the heartbeat timeout still detects a dead worker; a
    live one beats however long a single ETL statement takes. Outside an activity: no-op.
    """
    if not activity.in_activity():
        yield
        return
    stop = threading.Event()
    context = contextvars.copy_context()  # the activity's context, for activity.heartbeat

    def beat() -> None:
        while not stop.wait(every_s):
            context.run(activity.heartbeat, "etl running")

    thread = threading.Thread(target=beat, name="etl-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def etl_runner(settings: Settings, db_url: str,
               heartbeat_s: float = ETL_HEARTBEAT_SECONDS) -> EtlRunner:
    """The real ETL (``etl.pipeline.run_pipeline``) as the pipeline's first stage.

    On a retried activity attempt the whole re-evaluation window is reported as changed: the
    failed attempt may have committed aggregate rows before it died (the database went away
    before the run ended, the worker was killed between stages), and the retry then finds them
    identical and reports no change, so their hours would never be evaluated. Evaluating too
    much is harmless: alerts ignore hours they have seen. Hours changed by runs outside the
    schedule (``altaviz etl run``) are taken from ``etl_unevaluated_hours``, where the
    aggregates stage records every run's changes.
    """

    def run(hour: datetime) -> EtlSummary:
        with heartbeating(heartbeat_s):
            summary = run_pipeline(settings, db_url)
        floor = hour - MAX_REEVALUATION
        changed: set[datetime] = set()
        if activity.in_activity() and activity.info().attempt > 1:
            changed.update({floor, hour})
        # this run's changes and those of runs outside the schedule (etl_unevaluated_hours)
        with db.connect(db_url) as conn, db.admin(conn):
            recorded = conn.execute(db.queries("etl")["take_unevaluated_hours"]).fetchall()
        spans = [(r.first_hour, r.last_hour) for r in summary.changed]
        for first_hour, last_hour in [*spans, *((r[1], r[2]) for r in recorded)]:
            first = max(first_hour.astimezone(UTC), floor)
            last = min(last_hour.astimezone(UTC), hour)
            if first <= last:
                changed.update({first, last})
        return EtlSummary(ran=True, run_id=summary.run_id, changed_hours=sorted(changed),
                          detail=summary.line())

    return run


def build_worker(
    client: Client,
    *,
    task_queue: str,
    pool: ConnectionPool[Any],
    notify: Callable[..., Any] | None,
    etl: EtlRunner | None = None,
    evaluator: Evaluator | None = None,
    executor: ThreadPoolExecutor | None = None,
    extra_activities: Sequence[Callable[..., Any]] = (),
    **worker_options: Any,
) -> Worker:
    """A worker for every Altaviz workflow and activity on ``task_queue``.

    Production goes through :func:`compose`; tests and benchmarks call this directly to put
    stand-ins in place of the ETL, the rule engine or the notifier.

    Args:
        client: connected with the pydantic data converter.
        pool: PostgreSQL pool used by the persistence and pipeline activities.
        notify: the ``notify`` activity (``NotificationActivities(...).notify``).
        etl, evaluator: the pipeline's ETL and rule stages (None: ETL skipped, evaluation
            fails clearly).
        executor: thread pool of the synchronous (database) activities.
    """
    alerts = AlertActivities(pool)
    pipeline = PipelineActivities(client=client, pool=pool, task_queue=task_queue, etl=etl,
                                  evaluator=evaluator)
    activities: list[Callable[..., Any]] = [
        alerts.open_alert, alerts.record_transition,
        pipeline.run_etl, pipeline.list_organizations, pipeline.evaluate_rules,
        pipeline.start_or_update_alerts, pipeline.signal_clears, *extra_activities]
    if notify is not None:
        activities.append(notify)
    return Worker(
        client, task_queue=task_queue, workflows=[AlertWorkflow, PipelineWorkflow],
        activities=activities,
        activity_executor=executor or ThreadPoolExecutor(max_workers=POOL_SIZE),
        **worker_options)


def compose(client: Client, settings: Settings, db_url: str, *, pool: ConnectionPool[Any],
            executor: ThreadPoolExecutor, options: WorkerOptions | None = None) -> Worker:
    """The production worker: the real ETL, rule engine and notifier on the settings' queue."""
    options = options or WorkerOptions()
    notifier = NotificationActivities(db_url, settings, demo=options.demo)
    return build_worker(
        client, task_queue=settings.task_queue, pool=pool, notify=notifier.notify,
        etl=etl_runner(settings, db_url),
        evaluator=rules_evaluator(settings, options.escalation_override_hours),
        executor=executor)


async def run_worker(client: Client, settings: Settings, db_url: str, *,
                     options: WorkerOptions | None = None,
                     stop: asyncio.Event | None = None,
                     ready: Callable[[Worker], None] | None = None) -> None:
    """Run the production worker until ``stop`` is set (or the task is cancelled).

    Args:
        ready: called with the worker once it polls its task queue.
    """
    with db.connection_pool(db_url, min_size=1, max_size=POOL_SIZE) as pool, \
            ThreadPoolExecutor(max_workers=POOL_SIZE) as executor:
        worker = compose(client, settings, db_url, pool=pool, executor=executor,
                         options=options)
        async with worker:
            log.info("worker polling task queue %s", settings.task_queue)
            if ready is not None:
                ready(worker)
            if stop is None:
                stop = asyncio.Event()
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
