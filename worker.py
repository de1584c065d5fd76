"""The Altaviz worker: the one place that wires real implementations into Temporal.

It registers ``AlertWorkflow`` and ``PipelineWorkflow`` and every activity they call
(persistence, ETL, rule evaluation, dispatch of breaches and clears, and notification) on one
task queue. Several workers on the same queue share the work: Temporal hands each workflow or
activity task to exactly one of them, and every activity is idempotent, so a task retried on
another worker after a crash does no harm.

``altaviz worker`` (altaviz/commands/worker.py) runs :func:`run_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool
from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.pipeline import EtlRunner, Evaluator, PipelineActivities
from workflows.alert import AlertWorkflow
from workflows.models import EtlSummary, Evaluation
from workflows.pipeline import PipelineWorkflow

if TYPE_CHECKING:
    from altaviz.app import App
    from altaviz.settings import Settings

log = logging.getLogger("altaviz.worker")

#: ETL changes older than this before the evaluated hour are not re-evaluated by the hourly
#: run (a month-long backfill must not open alerts for last month's readings).
MAX_REEVALUATION = timedelta(hours=24)


def rules_evaluator(settings: Settings, pool: ConnectionPool[Any] | None = None) -> Evaluator:
    """The real rule engine (``rules.evaluate``) as the pipeline's evaluator.

    Uses the organization's newest stored rule set, else the newest default set, else loads
    ``settings.rules_file`` and stores it (so ``rule_set_id``/``rule_version`` are always
    stamped on breaches and pinned by the alerts they open). A large organization's hour is
    split over two connections; the second comes from ``pool`` (the worker's), whose
    backends have planned the statement before.
    """
    from rules.evaluate import evaluate
    from rules.loader import load_rule_set
    from rules.store import latest_rule_set, save_rule_set

    def evaluate_org(conn: psycopg.Connection[Any], org_id: str,
                     hours: list[datetime]) -> Evaluation:
        rule_set = latest_rule_set(conn, org_id) or latest_rule_set(conn, None)
        if rule_set is None:
            rule_set = save_rule_set(conn, load_rule_set(settings.rules_file))
        result = evaluate(conn, rule_set, org_id, (min(hours), max(hours)), pool=pool)
        return Evaluation(org_id=org_id, breaches=result.breaches, clears=result.clears)

    return evaluate_org


#: How often the ETL activity heartbeats while the ETL runs. The pipeline's heartbeat timeout
#: is 5 minutes, and one statement of a long catch-up (the COPY of a week's aggregates) runs
#: longer than that: without beats in between, Temporal timed the attempt out and started
#: another while the first was still working.
ETL_HEARTBEAT_SECONDS = 30.0


@contextlib.contextmanager
def heartbeating(every_s: float) -> Iterator[None]:
    """Heartbeat the current activity from a side thread until the block ends.

    A killed worker stops beating, so the heartbeat timeout still detects a dead worker; a
    live one beats however long a single ETL statement takes. Outside an activity: no-op.
    """
    import contextvars
    import threading

    from temporalio import activity

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
    identical and reports no change, so their hours would never be evaluated (found by the
    PostgreSQL outage test). Evaluating too much is harmless: alerts ignore hours they have
    seen. Hours changed by runs outside the schedule (``altaviz etl run``) are taken from
    ``etl_unevaluated_hours``, where the aggregates stage records every run's changes.
    """
    from temporalio import activity

    from altaviz import db
    from etl.pipeline import run_pipeline

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


def notification_activities(settings: Settings, db_url: str, *, demo: bool = False) -> Any:
    """The sibling ``NotificationActivities`` (activities/notify.py), or None if absent."""
    try:
        from activities.notify import NotificationActivities
    except ImportError:
        log.warning("activities/notify.py not available: the notify activity is not registered")
        return None
    return NotificationActivities(db_url, settings, demo=demo)


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
        activity_executor=executor or ThreadPoolExecutor(max_workers=8),
        **worker_options)


async def run_worker(app: App, *, stop: asyncio.Event | None = None,
                     schedule: bool = True, demo: bool = False,
                     evaluator: Evaluator | None = None,
                     ready: asyncio.Event | None = None) -> None:
    """Run a worker until ``stop`` is set (or the process is interrupted).

    Registers the search attributes (external servers; the embedded one gets them at start)
    and, with ``schedule``, creates the hourly pipeline schedule if it does not exist yet.

    Args:
        evaluator: the rule stage (default: :func:`rules_evaluator`); the demo wraps it to
            shorten escalation delays.
        ready: set once the worker polls its task queue.
    """
    from altaviz import db
    from altaviz.temporal_setup import ensure_schedule, ensure_search_attributes

    settings = app.settings
    db_url = app.database_url()
    client = await app.temporal_client()
    await ensure_search_attributes(client, settings.temporal_namespace)
    if schedule:
        await ensure_schedule(client, task_queue=settings.task_queue,
                              reminder_minutes=settings.reminder_minutes)
    notifier = notification_activities(settings, db_url, demo=demo)
    with db.connection_pool(db_url, min_size=1, max_size=8) as pool, \
            ThreadPoolExecutor(max_workers=8) as executor:
        worker = build_worker(
            client, task_queue=settings.task_queue, pool=pool,
            notify=notifier.notify if notifier is not None else None,
            etl=etl_runner(settings, db_url),
            evaluator=evaluator or rules_evaluator(settings, pool),
            executor=executor)
        async with worker:
            log.info("worker polling task queue %s", settings.task_queue)
            if ready is not None:
                ready.set()
            if stop is None:
                stop = asyncio.Event()
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()

