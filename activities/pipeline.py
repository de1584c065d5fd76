"""Activities of the hourly pipeline: the ETL stage, rule evaluation, and turning breaches and
clears into alert workflows.

Why activities (and not child workflows) start the alert workflows: an alert outlives the
pipeline run that opened it and is updated by later runs; a child workflow is tied to one
parent and cannot be "started or, if already running, signalled" by another parent. The
client's signal-with-start does exactly that in one call, and it is idempotent here because the
alert workflow ignores a breach whose hour it has already seen (so a retried batch, or an hour
evaluated twice, changes nothing). It also needs no worker to be accepted, unlike
update-with-start, which keeps the pipeline fast when workflow workers are busy.

The ETL and the rule engine are injected as plain callables (``worker.py`` wires the real
``etl`` and ``rules`` packages), so this module only orchestrates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.holds import apply_windows
from altaviz.core.db import org_ids, queries, tenant
from altaviz.core.errors import TerminalError
from altaviz.core.payloads import (
    AlertInput,
    Breach,
    BreachBatch,
    Clear,
    ClearBatch,
    DispatchResult,
    EtlRequest,
    EtlSummary,
    EvaluateRequest,
    Evaluation,
)
from altaviz.core.policy import PolicyFile
from workflows.alert import (
    SIGNAL_BREACH,
    SIGNAL_CLEAR,
    AlertWorkflow,
    alert_workflow_id,
    initial_state,
    search_attribute_pairs,
)

EtlRunner = Callable[[datetime], EtlSummary]
Evaluator = Callable[[psycopg.Connection[Any], str, list[datetime]], Evaluation]

_CONCURRENCY = 32


async def start_or_update_alert(
    client: Client, breach: Breach, *, task_queue: str, reminder_minutes: int = 60,
    max_history_events: int = 5000,
) -> WorkflowHandle[AlertWorkflow, Any]:
    """Start the alert workflow of this breach, or signal it if one is already open.

    One signal-with-start call: the server starts a run if none is running (and delivers the
    breach as its first signal, which the workflow recognises as its own opening breach) or
    signals the running one. Safe to repeat with the same breach.
    """
    wid = alert_workflow_id(breach.org_id, breach.compressor_id, breach.rule_id)
    pairs = search_attribute_pairs(initial_state(breach, wid, breach.hour))
    return await client.start_workflow(
        AlertWorkflow.run,
        AlertInput(breach=breach, reminder_minutes=reminder_minutes,
                   max_history_events=max_history_events),
        id=wid, task_queue=task_queue,
        start_signal=SIGNAL_BREACH, start_signal_args=[breach],
        search_attributes=TypedSearchAttributes(pairs),
    )


async def signal_clear(client: Client, clear: Clear) -> bool:
    """Deliver a clear to the open alert of its rule and compressor; False if none is open."""
    wid = alert_workflow_id(clear.org_id, clear.compressor_id, clear.rule_id)
    try:
        await client.get_workflow_handle(wid).signal(SIGNAL_CLEAR, clear)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False  # no alert open for it (already resolved, or never breached)
        raise
    return True


def latest_only(ev: Evaluation) -> Evaluation:
    """Keep the latest breach and the latest clear per (compressor, rule).

    Over several hours a firing rule yields a breach per hour; the alert only needs the latest
    (older hours are ignored by an open alert anyway), which keeps payloads and signals small.
    Breaches are dispatched before clears, and an alert ignores a clear older than its latest
    breach, so an episode that ended and started again within the range stays open.
    """
    breaches: dict[tuple[str, str], Breach] = {}
    for b in ev.breaches:
        key = (b.compressor_id, b.rule_id)
        if key not in breaches or b.hour >= breaches[key].hour:
            breaches[key] = b
    clears: dict[tuple[str, str], Clear] = {}
    for c in ev.clears:
        key = (c.compressor_id, c.rule_id)
        if key not in clears or c.hour >= clears[key].hour:
            clears[key] = c
    return Evaluation(org_id=ev.org_id, breaches=list(breaches.values()),
                      clears=list(clears.values()))


class PipelineActivities:
    """The pipeline's activities; dependencies come in through ``__init__``."""

    def __init__(self, *, client: Client, pool: ConnectionPool[Any], task_queue: str,
                 etl: EtlRunner | None = None, evaluator: Evaluator | None = None,
                 policy: PolicyFile | None = None) -> None:
        self._client = client
        self._policy = policy or PolicyFile()
        self._pool = pool
        self._task_queue = task_queue
        self._etl = etl
        self._evaluator = evaluator
        self._q = queries("alerts")

    @activity.defn(name="run_etl")
    def run_etl(self, req: EtlRequest) -> EtlSummary:
        """Run the ETL (landing files to Delta to hourly aggregates) once, as one activity.

        It heartbeats before starting so a worker crash is detected by the heartbeat timeout
        rather than the (long) start-to-close timeout; the ETL itself is idempotent.
        """
        activity.heartbeat("starting")
        if self._etl is None:
            return EtlSummary(ran=False, changed_hours=[req.hour],
                              detail="no ETL configured in this worker")
        try:
            return self._etl(req.hour)
        except TerminalError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__,
                                   non_retryable=True) from exc

    @activity.defn(name="list_organizations")
    def list_organizations(self) -> list[str]:
        """Every organization id (operational, cross-tenant read)."""
        with self._pool.connection() as conn:
            return org_ids(conn)

    @activity.defn(name="evaluate_rules")
    def evaluate_rules(self, req: EvaluateRequest) -> Evaluation:
        """Evaluate one organization's rules over some hours (inside its tenant transaction).

        Breaches of units in a maintenance window, or explained by the unit's stop (a rule's
        ``inhibits:``), open no alert: they are recorded in ``held_breaches`` instead.
        """
        activity.heartbeat(req.org_id)
        if self._evaluator is None:
            raise ApplicationError("no rule evaluator configured in this worker",
                                   type="ConfigError", non_retryable=True)
        try:
            with self._pool.connection() as conn:
                evaluation = self._evaluator(conn, req.org_id, list(req.hours))
                # Units in a maintenance window open no alerts; every held breach is recorded.
                evaluation = apply_windows(conn, evaluation)
        except TerminalError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__,
                                   non_retryable=True) from exc
        return latest_only(evaluation)

    @activity.defn(name="start_or_update_alerts")
    async def start_or_update_alerts(self, batch: BreachBatch) -> DispatchResult:
        """Signal-with-start one alert workflow per breach, concurrently.

        The organization's escalation policy sets the reminder cadence of the alerts it opens
        (its ``reminder_minutes``, else the pipeline's, from ``ALTAVIZ_REMINDER_MINUTES``).

        Breaches already covered by a resolved alert (an old hour evaluated again) are skipped
        here, so a re-run does not even start a short-lived workflow.
        """
        fresh = await asyncio.to_thread(self._uncovered, batch.breaches)
        sem = asyncio.Semaphore(_CONCURRENCY)
        done = 0

        async def one(b: Breach) -> None:
            nonlocal done
            org = self._policy.for_org(b.org_id)
            reminder = (batch.reminder_minutes if org.reminder_minutes is None
                        else org.reminder_minutes)
            async with sem:
                await start_or_update_alert(self._client, b, task_queue=self._task_queue,
                                            reminder_minutes=reminder)
            done += 1
            if done % 50 == 0:
                activity.heartbeat(done)

        await asyncio.gather(*(one(b) for b in fresh))
        return DispatchResult(sent=len(fresh), skipped=len(batch.breaches) - len(fresh))

    @activity.defn(name="signal_clears")
    async def signal_clears(self, batch: ClearBatch) -> DispatchResult:
        """Deliver clears to the open alerts they concern (none open: skipped)."""
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one(c: Clear) -> bool:
            async with sem:
                return await signal_clear(self._client, c)

        results = await asyncio.gather(*(one(c) for c in batch.clears))
        sent = sum(results)
        return DispatchResult(sent=sent, skipped=len(results) - sent)

    def _uncovered(self, breaches: Sequence[Breach]) -> list[Breach]:
        by_org: dict[str, list[Breach]] = {}
        for b in breaches:
            by_org.setdefault(b.org_id, []).append(b)
        fresh: list[Breach] = []
        with self._pool.connection() as conn:
            for org, items in by_org.items():
                wids = [alert_workflow_id(b.org_id, b.compressor_id, b.rule_id) for b in items]
                with tenant(conn, org):
                    rows = conn.execute(self._q["resolved_covering_breaches"],
                                        {"workflow_ids": wids}).fetchall()
                latest = {r[0]: (r[1], r[2]) for r in rows}
                for wid, b in zip(wids, items, strict=True):
                    state, last_hour = latest.get(wid, (None, None))
                    if state == "resolved" and last_hour is not None and last_hour >= b.hour:
                        continue
                    fresh.append(b)
        return fresh
