"""The ETL stages as activities of the pipeline workflow, run by the ETL worker.

Each stage (bronze, silver, gold, aggregates, quality) is an activity of its own on the ETL
task queue (``Settings.etl_queue``), so a long backfill occupies ETL workers only: the alert
workflows' tasks go to other workers on another queue, and an escalation timer fires on time
however long a stage runs. Several ETL workers on one queue share the stages (Temporal hands
each task to one of them); the lake's writer lock serializes the stages of one lake.

``etl_begin`` and ``etl_end`` record the run in ``etl_runs``; ``etl_end`` also takes the hours
the aggregates stage recorded for the rules (``etl_unevaluated_hours``). Every activity is
idempotent: a stage catches up on whatever batches it has not seen, so a retried or repeated
stage loses and doubles nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from altaviz.core import db
from altaviz.core.errors import TerminalError
from altaviz.core.payloads import (
    EtlEndRequest,
    EtlStageName,
    EtlStageRequest,
    EtlStageResult,
    EtlSummary,
)
from etl.models import AggregatesResult, BronzeResult, QualityResult, SilverResult

#: ETL changes older than this before the evaluated hour are not re-evaluated by the hourly
#: run (a month-long backfill must not open alerts for last month's readings).
MAX_REEVALUATION = timedelta(hours=24)

#: How often an ETL activity heartbeats while its stage runs. The pipeline's heartbeat timeout
#: is 5 minutes, and one statement of a long catch-up (the COPY of a week's aggregates) can run
#: longer than that: without beats in between, Temporal would time the attempt out and start
#: another while the first is still working.
ETL_HEARTBEAT_SECONDS = 30.0

#: Runs one stage: ``(stage, run_id, progress)`` to the stage's result model
#: (``etl.models``); ``progress`` takes ``(stage, fraction)``.
StageFn = Callable[[EtlStageName, str, Callable[[str, float], None]], BaseModel]


@contextlib.contextmanager
def heartbeating(every_s: float,
                 details: Callable[[], tuple[Any, ...]] = lambda: ("etl running",)
                 ) -> Iterator[None]:
    """Heartbeat the current activity from a side thread until the block ends.

    A killed worker stops beating, so the heartbeat timeout still detects a dead worker; a
    live one beats however long a single ETL statement takes. Outside an activity: no-op.

    Args:
        every_s: seconds between beats.
        details: the details of each beat (a stage's name and progress).
    """
    if not activity.in_activity():
        yield
        return
    stop = threading.Event()
    context = contextvars.copy_context()  # the activity's context, for activity.heartbeat

    def beat() -> None:
        while not stop.wait(every_s):
            context.run(activity.heartbeat, *details())

    thread = threading.Thread(target=beat, name="etl-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def changed_hours(db_url: str, hour: datetime, spans: list[tuple[datetime, datetime]],
                  widen: bool) -> list[datetime]:
    """The hours the rules evaluate after an ETL run, as the first and last of a range.

    ``spans`` are the run's own changes; the hours the aggregates stage recorded in
    ``etl_unevaluated_hours`` (this run's and those of runs outside the schedule, ``altaviz
    etl run``) are taken (removed) here. Everything is clipped to the
    :data:`MAX_REEVALUATION` window before ``hour``. ``widen`` reports the whole window: a
    retried attempt may follow one that committed aggregate rows (or took the recorded hours)
    before it died, and then finds them identical and reports no change, so their hours
    would never be evaluated. Evaluating too much is harmless: alerts ignore hours they have
    seen.
    """
    floor = hour - MAX_REEVALUATION
    changed: set[datetime] = set()
    if widen:
        changed.update({floor, hour})
    with db.connect(db_url) as conn, db.admin(conn):
        recorded = conn.execute(db.queries("etl")["take_unevaluated_hours"]).fetchall()
    for first_hour, last_hour in [*spans, *((r[1], r[2]) for r in recorded)]:
        first = max(first_hour.astimezone(UTC), floor)
        last = min(last_hour.astimezone(UTC), hour)
        if first <= last:
            changed.update({first, last})
    return sorted(changed)


def stage_counts(result: BaseModel) -> dict[str, int]:
    """A stage result's figures that ``etl_runs`` records (see :class:`EtlStageResult`)."""
    if isinstance(result, BronzeResult):
        return {"files": result.files}
    if isinstance(result, SilverResult):
        return {"rows_in": result.rows_in, "rows_quarantined": result.rows_quarantined,
                "rows_late": result.late, "duplicates": result.duplicates}
    if isinstance(result, AggregatesResult):
        return {"hours_upserted": result.rows_upserted}
    if isinstance(result, QualityResult):
        return {"checks": result.checks, "checks_failed": result.failed}
    return {}


def _terminal(exc: TerminalError) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


class EtlActivities:
    """The ETL worker's activities; the stages come in through ``__init__``.

    Args:
        db_url: PostgreSQL URL (as the owner role) for the run's records.
        stages: runs one stage (the worker wires ``etl.pipeline.StageRunner.run``).
        heartbeat_s: seconds between heartbeats while a stage runs.
    """

    def __init__(self, *, db_url: str, stages: StageFn,
                 heartbeat_s: float = ETL_HEARTBEAT_SECONDS) -> None:
        self._db_url = db_url
        self._stages = stages
        self._heartbeat_s = heartbeat_s
        self._q = db.queries("etl")

    @activity.defn(name="etl_begin")
    def etl_begin(self, req: EtlStageRequest) -> None:
        """Record the run as running in ``etl_runs`` (once, however often retried)."""
        with db.connect(self._db_url) as conn, db.admin(conn):
            conn.execute(self._q["begin_run"], {"run_id": req.run_id})

    @activity.defn(name="etl_bronze")
    def etl_bronze(self, req: EtlStageRequest) -> EtlStageResult:
        """Append new landing files to bronze."""
        return self._stage("bronze", req)

    @activity.defn(name="etl_silver")
    def etl_silver(self, req: EtlStageRequest) -> EtlStageResult:
        """Type, validate, deduplicate and flag bronze's new batches into silver."""
        return self._stage("silver", req)

    @activity.defn(name="etl_gold")
    def etl_gold(self, req: EtlStageRequest) -> EtlStageResult:
        """Fold silver's new batches into gold's hourly partials and windows."""
        return self._stage("gold", req)

    @activity.defn(name="etl_aggregates")
    def etl_aggregates(self, req: EtlStageRequest) -> EtlStageResult:
        """Upsert gold's new hours into PostgreSQL's hourly aggregates."""
        return self._stage("aggregates", req)

    @activity.defn(name="etl_quality")
    def etl_quality(self, req: EtlStageRequest) -> EtlStageResult:
        """Record the data-quality checks of silver's new batches."""
        return self._stage("quality", req)

    @activity.defn(name="etl_end")
    def etl_end(self, req: EtlEndRequest) -> EtlSummary:
        """Record the run's outcome and return the hours the rules evaluate next."""
        counts: dict[str, int] = {}
        for stage in req.stages:
            counts.update(stage.counts)
        figures = {k: counts.get(k, 0) for k in ("files", "rows_in", "rows_quarantined",
                                                 "rows_late", "hours_upserted")}
        with db.connect(self._db_url) as conn, db.admin(conn):
            conn.execute(self._q["finish_run"], {
                "run_id": req.run_id, "status": "failed" if req.error else "succeeded",
                "error": req.error[:2000] if req.error else None, **figures})
        if req.error:
            return EtlSummary(ran=False, run_id=req.run_id, detail=req.error)
        widen = activity.info().attempt > 1 or any(s.retried for s in req.stages)
        hours = changed_hours(self._db_url, req.hour, [], widen)
        detail = (f"etl {req.run_id}: {figures['files']} files, {figures['rows_in']} rows in, "
                  f"{figures['rows_quarantined']} quarantined, "
                  f"{counts.get('duplicates', 0)} duplicates, {figures['rows_late']} late, "
                  f"{figures['hours_upserted']} hours upserted")
        return EtlSummary(ran=True, run_id=req.run_id, changed_hours=hours, detail=detail)

    def _stage(self, stage: EtlStageName, req: EtlStageRequest) -> EtlStageResult:
        """Run one stage, heartbeating its progress, and classify its failure."""
        done = [0.0]

        def progress(_: str, fraction: float) -> None:
            done[0] = fraction

        activity.heartbeat(stage, 0.0)
        try:
            with heartbeating(self._heartbeat_s, lambda: (stage, round(done[0], 3))):
                result = self._stages(stage, req.run_id, progress)
        except TerminalError as exc:
            raise _terminal(exc) from exc
        return EtlStageResult(stage=stage, counts=stage_counts(result),
                              retried=activity.info().attempt > 1)
