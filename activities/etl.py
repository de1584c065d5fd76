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
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb
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
    etl run``) are taken here, whatever their age: a unit whose gateway was offline for days
    uploads a backlog whose hours deserve their alerts (marked late in the notification). The
    work is bounded by what arrived, not by a window. Only hours after ``hour`` (not ended
    yet) wait for a later run.

    Taking marks the rows with the activity's key, the same for each of its retries, so an
    attempt that took them and died before reporting back does not lose them: the retry reads
    them again. ``widen`` (a retried attempt) adds ``hour`` itself, which a retry that finds
    its predecessor's aggregate rows identical would otherwise not report.
    """
    changed: set[datetime] = set()
    if widen:
        changed.add(hour)
    with db.connect(db_url) as conn, db.admin(conn):
        recorded = conn.execute(db.queries("etl")["take_unevaluated_hours"],
                                {"taken_by": _taker()}).fetchall()
    for first_hour, last_hour in [*spans, *((r[1], r[2]) for r in recorded)]:
        first = first_hour.astimezone(UTC)
        last = min(last_hour.astimezone(UTC), hour)
        if first <= last:
            changed.update({first, last})
    return sorted(changed)


def _taker() -> str:
    """The key that takes recorded hours: the activity (same for each retry), else unique."""
    if activity.in_activity():
        info = activity.info()
        return f"{info.workflow_run_id}/{info.activity_id}"
    return f"call/{uuid.uuid4().hex}"


#: Prefix of a stage count that is one quarantine reason's rows (``quarantined:bad_timestamp``).
QUARANTINED = "quarantined:"


def stage_counts(result: BaseModel) -> dict[str, int]:
    """A stage result's figures that ``etl_runs`` records (see :class:`EtlStageResult`)."""
    if isinstance(result, BronzeResult):
        return {"files": result.files}
    if isinstance(result, SilverResult):
        return {"rows_in": result.rows_in, "rows_quarantined": result.rows_quarantined,
                "rows_late": result.late, "duplicates": result.duplicates,
                **{f"{QUARANTINED}{reason}": n for reason, n in result.quarantined.items()}}
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
        db_url: PostgreSQL URL (the ETL login) for the run's records.
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
            reasons = {k.removeprefix(QUARANTINED): n for k, n in counts.items()
                       if k.startswith(QUARANTINED)}
            if reasons:
                conn.execute(self._q["record_quarantine_reasons"],
                             {"run_id": req.run_id, "reasons": Jsonb(reasons)})
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
