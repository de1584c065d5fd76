"""The Altaviz workers: the one place that wires real implementations into Temporal.

Two workers on two task queues. The alerts worker registers ``AlertWorkflow``,
``NotifyStepWorkflow`` and ``PipelineWorkflow`` and the activities they call on the workers'
queue (persistence, rule evaluation, dispatch of breaches and clears, notification). The ETL
worker registers the ETL stage activities (``activities/etl.py``) on the ETL queue, so a long
backfill occupies ETL workers only and never holds up an alert's tasks. Several workers of
either kind on one queue share the work: Temporal hands each workflow or activity task to
exactly one of them, and every activity is idempotent, so a task retried on another worker
after a crash does no harm.

This module is the composition root: :func:`compose` and :func:`compose_etl` build the workers
with every real dependency (connection pool, ETL, rule engine, notifier) and :func:`run_worker`
runs them (both, or one: ``Settings.workers``). ``altaviz up``, ``altaviz worker`` and the demo
all reach it through ``altaviz.app.runtime.Runtime``, so they run the same wiring; tests build
workers with stand-in stages through :func:`build_worker` and :func:`build_etl_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.etl import (
    ETL_HEARTBEAT_SECONDS,
    EtlActivities,
    StageFn,
    changed_hours,
    heartbeating,
)
from activities.holds import HoldActivities
from activities.notify import NotificationActivities
from activities.pipeline import EtlRunner, Evaluator, PipelineActivities
from activities.reconcile import ReconcileActivities
from altaviz.core import db
from altaviz.core.payloads import EtlStageName, EtlSummary, Evaluation
from altaviz.core.policy import PolicyFile, read_policy
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.pipeline import StageRunner, run_pipeline
from rules.evaluate import evaluate
from rules.forecast import GridCache, forecast_hour
from rules.loader import load_rule_set
from rules.stops import SilverStops, with_stops
from rules.store import latest_rule_set, save_rule_set
from workflows.alert import AlertWorkflow
from workflows.notify import NotifyStepWorkflow
from workflows.pipeline import PipelineWorkflow
from workflows.reconcile import ReconcileWorkflow

log = logging.getLogger("altaviz.worker")

#: Activities one ETL worker runs at once: a stage, and a short ``etl_begin``/``etl_end`` or a
#: second stage waiting for the lake's writer lock (which serializes the stages of one lake,
#: so more would only wait; memory stays one stage's, bounded by ``etl_memory_mb``).
ETL_SLOTS = 2

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
                    escalation_override_hours: float | None = None,
                    policy: PolicyFile | None = None) -> Evaluator:
    """The real rule engine (``rules.evaluate``) as the pipeline's evaluator.

    Uses the organization's newest stored rule set, else the newest default set, else loads
    ``settings.rules_file`` and stores it (so ``rule_set_id``/``rule_version`` are always
    stamped on breaches and pinned by the alerts they open). An organization whose
    escalation ``policy`` sets ``escalate_after_hours`` gets that delay instead of the rules'
    own (the demo's override wins over both). A stop rule's breach carries when and how the
    unit stopped, read from the lake's silver readings (``rules.stops``).
    """

    forecast_inputs = GridCache()
    stops = SilverStops(Lake(settings.lake_path).uri("silver"))

    def evaluate_org(conn: psycopg.Connection[Any], org_id: str,
                     hours: list[datetime]) -> Evaluation:
        rule_set = latest_rule_set(conn, org_id) or latest_rule_set(conn, None, reader=org_id)
        if rule_set is None:
            rule_set = save_rule_set(conn, load_rule_set(settings.rules_file,
                                                         catalog=settings.catalog))
        result = evaluate(conn, rule_set, org_id, (min(hours), max(hours)),
                          threads=settings.rules_threads)
        breaches = with_stops(result.breaches, rule_set, stops, open_stops=result.stopped)
        clears = result.clears
        try:   # a forecast that cannot be made must not hold back the rules' own alerts
            _, warned, ended = forecast_hour(conn, rule_set, org_id, max(hours),
                                             cache=forecast_inputs, changed=hours)
            breaches, clears = breaches + warned, clears + ended
        except Exception:
            log.exception("failure forecasts of %s at %s failed; alerts go out without them",
                          org_id, max(hours))
        after = policy.for_org(org_id).escalate_after_hours if policy is not None else None
        if after is not None:
            breaches = [b.model_copy(update={"escalation_delay_hours": after}) for b in breaches]
        if escalation_override_hours is not None:
            breaches = [b.model_copy(update={"escalation_delay_hours": escalation_override_hours})
                        for b in breaches]
        return Evaluation(org_id=org_id, breaches=breaches, clears=clears,
                          held=result.held)

    return evaluate_org


def etl_runner(settings: Settings, db_url: str,
               heartbeat_s: float = ETL_HEARTBEAT_SECONDS) -> EtlRunner:
    """The whole ETL (``etl.pipeline.run_pipeline``) as one activity, ``run_etl``.

    Pipeline runs started before the ETL stages became activities of their own still call
    it on the workers' queue. The hours it reports are those of
    :func:`activities.etl.changed_hours`: on a retried attempt the whole re-evaluation window.
    """

    def run(hour: datetime) -> EtlSummary:
        with heartbeating(heartbeat_s):
            summary = run_pipeline(settings, db_url)
        spans = [(r.first_hour, r.last_hour) for r in summary.changed]
        retried = activity.in_activity() and activity.info().attempt > 1
        return EtlSummary(ran=True, run_id=summary.run_id,
                          changed_hours=changed_hours(db_url, hour, spans, retried),
                          detail=summary.line())

    return run


def build_worker(
    client: Client,
    *,
    task_queue: str,
    pool: ConnectionPool[Any],
    notify: Callable[..., Any] | Sequence[Callable[..., Any]] | None,
    etl: EtlRunner | None = None,
    evaluator: Evaluator | None = None,
    executor: ThreadPoolExecutor | None = None,
    extra_activities: Sequence[Callable[..., Any]] = (),
    policy: PolicyFile | None = None,
    **worker_options: Any,
) -> Worker:
    """A worker for every Altaviz workflow and activity on ``task_queue``.

    Production goes through :func:`compose`; tests and benchmarks call this directly to put
    stand-ins in place of the ETL, the rule engine or the notifier.

    Args:
        client: connected with the pydantic data converter.
        pool: PostgreSQL pool used by the persistence and pipeline activities.
        notify: the notification activities (``NotificationActivities(...).all()``: the
            ``plan_notification`` and ``deliver`` of notification steps, and ``notify``),
            or stand-ins with those names.
        etl, evaluator: the pipeline's ETL and rule stages (None: ETL skipped, evaluation
            fails clearly).
        executor: thread pool of the synchronous (database) activities.
        policy: the escalation policy (reminder cadence of the alerts the pipeline opens).
    """
    alerts = AlertActivities(pool)
    pipeline = PipelineActivities(client=client, pool=pool, task_queue=task_queue, etl=etl,
                                  evaluator=evaluator, policy=policy)
    reconciler = ReconcileActivities(client=client, pool=pool)
    activities: list[Callable[..., Any]] = [
        alerts.open_alert, alerts.record_transition, alerts.record_transitions,
        alerts.record_delivery_failure,
        HoldActivities(pool).check_silence, reconciler.reconcile_alerts,
        pipeline.run_etl, pipeline.list_organizations, pipeline.evaluate_rules,
        pipeline.start_or_update_alerts, pipeline.signal_clears, *extra_activities]
    if callable(notify):
        activities.append(notify)
    elif notify is not None:
        activities.extend(notify)
    return Worker(
        client, task_queue=task_queue,
        workflows=[AlertWorkflow, NotifyStepWorkflow, PipelineWorkflow, ReconcileWorkflow],
        activities=activities,
        activity_executor=executor or ThreadPoolExecutor(max_workers=POOL_SIZE),
        **worker_options)


def compose(client: Client, settings: Settings, db_url: str, *, pool: ConnectionPool[Any],
            executor: ThreadPoolExecutor, options: WorkerOptions | None = None,
            etl_url: str | None = None) -> Worker:
    """The production worker: the real ETL, rule engine and notifier on the settings' queue.

    ``db_url`` is the runtime login (tenant work, notifications); ``etl_url`` the ETL
    login's (``<database>_etl``), which the ETL alone uses (default: ``db_url``).
    """
    options = options or WorkerOptions()
    policy = read_policy(settings.escalation_policy_file)
    notifier = NotificationActivities(db_url, settings, demo=options.demo, policy=policy)
    return build_worker(
        client, task_queue=settings.task_queue, pool=pool, notify=notifier.all(),
        etl=etl_runner(settings, etl_url or db_url),
        evaluator=rules_evaluator(settings, options.escalation_override_hours, policy),
        executor=executor, policy=policy)


def build_etl_worker(client: Client, *, task_queue: str, db_url: str, stages: StageFn,
                     heartbeat_s: float = ETL_HEARTBEAT_SECONDS,
                     executor: ThreadPoolExecutor | None = None,
                     **worker_options: Any) -> Worker:
    """A worker for the ETL stage activities on ``task_queue`` (no workflows).

    Production goes through :func:`compose_etl`; tests pass stand-in ``stages``.

    Args:
        client: connected with the pydantic data converter.
        db_url: PostgreSQL URL for the run's records (``etl_runs``, changed hours).
        stages: runs one stage.
        heartbeat_s: seconds between a running stage's heartbeats.
        executor: thread pool of the activities (default: :data:`ETL_SLOTS` threads).
    """
    acts = EtlActivities(db_url=db_url, stages=stages, heartbeat_s=heartbeat_s)
    return Worker(
        client, task_queue=task_queue,
        activities=[acts.etl_begin, acts.etl_bronze, acts.etl_silver, acts.etl_gold,
                    acts.etl_aggregates, acts.etl_quality, acts.etl_end],
        activity_executor=executor or ThreadPoolExecutor(max_workers=ETL_SLOTS),
        max_concurrent_activities=ETL_SLOTS, **worker_options)


def compose_etl(client: Client, settings: Settings, db_url: str, *,
                runner: StageRunner, executor: ThreadPoolExecutor) -> Worker:
    """The production ETL worker: the real stages on the settings' ETL queue."""

    def stage(name: EtlStageName, run_id: str,
              progress: Callable[[str, float], None]) -> BaseModel:
        return runner.run(name, run_id, progress=progress)

    return build_etl_worker(client, task_queue=settings.etl_queue, db_url=db_url,
                            stages=stage,
                            executor=executor)


@dataclass(frozen=True)
class Workers:
    """The workers one process runs (None: not run here, see ``Settings.workers``)."""

    alerts: Worker | None = None
    etl: Worker | None = None


async def run_worker(client: Client, settings: Settings, db_url: str, *,
                     etl_url: str | None = None,
                     options: WorkerOptions | None = None,
                     stop: asyncio.Event | None = None,
                     ready: Callable[[Workers], None] | None = None,
                     only: Literal["all", "alerts", "etl"] | None = None) -> None:
    """Run the production workers until ``stop`` is set (or the task is cancelled).

    Args:
        ready: called with the workers once they poll their task queues.
        only: which workers to run (default: ``settings.workers``).
    """
    which = only or settings.workers
    with contextlib.ExitStack() as stack:
        workers: list[Worker] = []
        alerts = etl = None
        if which in ("all", "alerts"):
            pool = stack.enter_context(db.connection_pool(db_url, min_size=1,
                                                          max_size=POOL_SIZE))
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=POOL_SIZE))
            alerts = compose(client, settings, db_url, pool=pool, executor=executor,
                             options=options, etl_url=etl_url)
            workers.append(alerts)
        if which in ("all", "etl"):
            runner = StageRunner(settings, etl_url or db_url)
            stack.callback(runner.close)
            etl_executor = stack.enter_context(ThreadPoolExecutor(
                max_workers=ETL_SLOTS, thread_name_prefix="etl"))
            etl = compose_etl(client, settings, etl_url or db_url, runner=runner,
                              executor=etl_executor)
            workers.append(etl)
        async with contextlib.AsyncExitStack() as running:
            for w in workers:
                await running.enter_async_context(w)
            log.info("workers polling task queue(s) %s",
                     ", ".join(w.task_queue for w in workers))
            if ready is not None:
                ready(Workers(alerts=alerts, etl=etl))
            if stop is None:
                stop = asyncio.Event()
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
