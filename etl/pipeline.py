"""The medallion pipeline: landing -> bronze -> silver -> gold -> PostgreSQL -> data quality.

Three ways in, one implementation (:class:`StageRunner`, every stage in this process):

* the scheduled pipeline runs each stage as an activity of its own on the ETL worker's task
  queue (``activities/etl.py``), one :class:`StageRunner` per worker;
* :func:`run_pipeline` runs every stage in order under the lake's writer lock, records the run
  in ``etl_runs`` and returns an :class:`~etl.models.EtlRunReport` (including the changed
  ``(org, compressor, hour range)`` list for rule evaluation); ``altaviz etl run`` calls it;
* :func:`run_stage` runs one stage on its own (its own connections and lock); the tests use
  it to run stages separately and out of order. Every stage is idempotent and catches up on
  whatever earlier stages produced that it has not seen, so a retried or re-ordered stage
  cannot lose or double anything.

Memory is bounded by settings, not by processes: each stage's DuckDB instance is limited to
``etl_memory_mb`` (it spills beyond), and :func:`release_memory` closes it between stages once
the process holds more than :attr:`Thresholds.reconnect_above_bytes`.

Stage bookkeeping: every Delta table records the last bronze batch it incorporated in its own
commit (delta-rs app transactions) and the PostgreSQL stages record theirs in
``etl_stage_progress``; a stage's input is always "batches after my mark, up to the previous
stage's mark".
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from altaviz.core import db, duck
from altaviz.core.settings import Settings
from etl.aggregates import compressor_orgs, fleet_compressors, stage_mark, upsert_aggregates
from etl.bronze import bronze_ingest
from etl.carry import Carry
from etl.gold import gold_features
from etl.lake import Lake
from etl.ledger import LandingFile, pending
from etl.migrate import migrate_lake, tables_to_migrate
from etl.models import (
    AggregatesResult,
    BronzeResult,
    EtlRunReport,
    GoldResult,
    QualityResult,
    SilverResult,
)
from etl.quality import quality_checks
from etl.silver import silver_transform
from etl.thresholds import DEFAULT_THRESHOLDS, Thresholds

log = logging.getLogger(__name__)
Stage = Literal["bronze", "silver", "gold", "aggregates", "quality"]
STAGES: tuple[Stage, ...] = ("bronze", "silver", "gold", "aggregates", "quality")
Progress = Callable[[str, float], None]
StageHook = Callable[[str], None]


def new_run_id() -> str:
    """A sortable run id: UTC start time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


class _Context:
    def __init__(self, settings: Settings, db_url: str, landing: Path | None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.settings = settings
        self.db_url = db_url
        self.thresholds = thresholds
        self.landing = landing or settings.landing_path
        self.lake = Lake(settings.lake_path)
        #: bronze's pending landing files, when sizing the stage already listed them
        self.pending: list[LandingFile] | None = None
        #: rows the stages hand each other in this process (etl.carry), from the
        #: :class:`StageRunner` that runs them
        self.carry: Carry | None = None

    def duck(self) -> Any:
        """A DuckDB connection limited to ``etl_memory_mb``, on ``etl_threads`` threads."""
        return duck.connect(temp_directory=self.lake.root / "_tmp",
                            memory_limit=f"{self.settings.etl_memory_mb}MB",
                            threads=self.settings.etl_threads)


def _run(ctx: _Context, stage: Stage, con: Any, conn: psycopg.Connection[Any], run_id: str,
         progress: Progress | None, as_of: datetime | None) -> BaseModel:
    """Run one stage on the given connections, in this process."""
    s = ctx.settings
    if stage == "bronze":
        return bronze_ingest(con, ctx.lake, ctx.landing, progress, files=ctx.pending)
    if stage == "silver":
        return silver_transform(con, ctx.lake, compressor_orgs(conn), s.late_arrival_minutes,
                                progress, carry=ctx.carry, thresholds=ctx.thresholds,
                                fleet=fleet_compressors(conn))
    if stage == "gold":
        return gold_features(con, ctx.lake, progress, memory_mb=s.etl_memory_mb,
                             carry=ctx.carry, bucket_hours=s.etl_bucket_hours,
                             thresholds=ctx.thresholds)
    if stage == "aggregates":
        return upsert_aggregates(con, ctx.lake, conn, ctx.db_url, run_id, progress,
                                 carry=ctx.carry, copy_streams=s.etl_copy_streams)
    return quality_checks(con, ctx.lake, conn, run_id, s.freshness_grace_minutes, as_of,
                          db_url=ctx.db_url)


class StageRunner:
    """Runs ETL stages, one per call, each under the lake's writer lock, in this process.

    Why one object across calls: the stages hand each other rows in memory
    (:class:`~etl.carry.Carry`, taken only when they are exactly the batches a stage is about
    to process) and reuse an idle DuckDB connection, which the ETL worker's stage activities
    and :func:`run_pipeline` both want; what a call cannot take from the previous one (another
    worker ran that stage, a retry) it reads from the lake. Safe to call from several threads:
    each call takes the idle connection or opens its own, and the writer lock serializes the
    stages of one lake.

    Args:
        settings: lake and landing folders, DuckDB's memory limit and threads.
        db_url: PostgreSQL URL (the ETL login, or the owner; tenant work switches to the
            ETL's tenant role per org).
        landing: landing folder instead of ``settings.landing_path``.
        thresholds: where stages change method by size.
        lock: take the lake's writer lock per call (False: the caller holds it).
    """

    def __init__(self, settings: Settings, db_url: str, *, landing: Path | None = None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS, lock: bool = True) -> None:
        self.settings = settings
        self.db_url = db_url
        self.landing = landing or settings.landing_path
        self.thresholds = thresholds
        self.carry = Carry()
        self._lock = lock
        #: the lake's tables are known to be keyed by organization (etl.migrate)
        self._keyed = False
        self._idle: Any = None
        self._mutex = threading.Lock()

    def run(self, stage: Stage, run_id: str, *, progress: Progress | None = None,
            as_of: datetime | None = None) -> BaseModel:
        """Run one stage (``bronze``, ``silver``, ``gold``, ``aggregates`` or ``quality``).

        Args:
            run_id: the run the stage's records belong to.
            progress: ``(stage, fraction)`` callback.
            as_of: the time freshness is measured at (default: now).

        Returns:
            The stage's result model (:class:`BronzeResult`, :class:`SilverResult`,
            :class:`GoldResult`, :class:`AggregatesResult` or :class:`QualityResult`).
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        ctx = _Context(self.settings, self.db_url, self.landing, self.thresholds)
        ctx.carry = self.carry
        with ctx.lake.writer_lock() if self._lock else contextlib.nullcontext():
            with self._mutex:
                con, self._idle = self._idle, None
            con = con or ctx.duck()
            try:
                with db.connect(self.db_url) as conn:
                    if not self._keyed:
                        self._upgrade(ctx.lake, con, conn)
                    ctx.lake.ensure()
                    rows = _input_rows(ctx, stage, con, conn)
                    threads = (1 if rows <= self.thresholds.one_thread_rows
                               else self.settings.etl_threads)
                    con.execute(f"SET threads = {int(threads)}")
                    result = _run(ctx, stage, con, conn, run_id, progress, as_of)
            except BaseException:
                con.close()
                raise
            if not release_memory(con, self.thresholds.reconnect_above_bytes):
                with self._mutex:
                    con, self._idle = self._idle, con
                if con is not None:   # another call's connection went idle first
                    con.close()
            return result

    def _upgrade(self, lake: Lake, con: Any, conn: psycopg.Connection[Any]) -> None:
        """Give a lake written before organization keys its ``org_id`` columns
        (:mod:`etl.migrate`), once per runner: the stages read and join on them."""
        if lake.root.exists() and tables_to_migrate(lake):
            for t in migrate_lake(con, lake, fleet_compressors(conn)):
                log.warning("lake upgraded: %s rewritten with org_id (%d rows, batch mark %d)",
                            t.table, t.rows, t.batch_mark)
        self._keyed = True

    def close(self) -> None:
        """Close the idle DuckDB connection (the runner stays usable)."""
        with self._mutex:
            con, self._idle = self._idle, None
        if con is not None:
            con.close()


def run_stage(stage: Stage, settings: Settings, db_url: str, *, landing: Path | None = None,
              run_id: str | None = None, as_of: datetime | None = None,
              thresholds: Thresholds = DEFAULT_THRESHOLDS) -> BaseModel:
    """Run one stage on its own (see :meth:`StageRunner.run`)."""
    runner = StageRunner(settings, db_url, landing=landing, thresholds=thresholds)
    try:
        return runner.run(stage, run_id or new_run_id(), as_of=as_of)
    finally:
        runner.close()


#: Per stage: the table it reads (whose mark bounds its batches) and the table whose rows
#: in those batches measure its input. Gold and quality read silver, but a lake written before
#: silver had ``batch_id`` statistics (``etl.lake.STATS_COLUMNS``) has silver files without
#: them, and every such file would count; bronze holds the same batches' readings, a few more
#: (quarantined rows, duplicates), always with statistics.
_INPUTS: dict[str, tuple[str, str]] = {
    "silver": ("bronze", "bronze"), "gold": ("silver", "bronze"),
    "aggregates": ("gold", "gold"), "quality": ("silver", "bronze")}


def _input_rows(ctx: _Context, stage: Stage, con: Any, conn: psycopg.Connection[Any]) -> int:
    """About how many rows the stage will read: the pending landing files' rows (Parquet
    footers) for bronze, else the rows of the batches between the stage's mark and the
    upstream table's (Delta log statistics, see :data:`_INPUTS`). Nothing is scanned."""
    lake = ctx.lake
    if stage == "bronze":
        ctx.pending = pending(con, lake, ctx.landing)  # bronze, if it runs here, reuses it
        total = 0
        for f in ctx.pending:
            with contextlib.suppress(OSError, pa.ArrowException):  # bronze reports it
                total += pq.read_metadata(f.path).num_rows
        return total
    upstream, measured_by = _INPUTS[stage]
    mark = stage_mark(conn, stage) if stage in ("aggregates", "quality") else \
        lake.batch_mark(stage)
    return lake.rows_for_batches(measured_by, mark, lake.batch_mark(upstream))


def run_pipeline(settings: Settings, db_url: str, *, landing: Path | None = None,
                 progress: Progress | None = None, after_stage: StageHook | None = None,
                 run_id: str | None = None, as_of: datetime | None = None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS) -> EtlRunReport:
    """Run every stage in order in this process and record the run in ``etl_runs``.

    Args:
        settings: lake_path, landing_path, late_arrival_minutes, freshness_grace_minutes.
        db_url: PostgreSQL URL (the ETL login, or the owner; tenant work switches to the
            ETL's tenant role per org).
        landing: landing folder instead of ``settings.landing_path``.
        progress: ``(stage, fraction)`` callback for a progress display.
        after_stage: called with each stage's name after it committed (tests use it to
            crash the run between stages).
        run_id: the run id (default: :func:`new_run_id`).
        as_of: the time freshness is measured at (default: now).
        thresholds: the sizes at which stages change method (tests pass small ones to take
            a bulk path on a few rows).

    Returns:
        The summary; ``changed`` lists the aggregate hours that changed, per compressor.
    """
    run_id = run_id or new_run_id()
    q = db.queries("etl")
    started = time.perf_counter()
    results: dict[str, BaseModel] = {}
    lake = Lake(settings.lake_path)
    with lake.writer_lock():
        with db.connect(db_url) as conn, db.admin(conn):
            closed = conn.execute(q["close_interrupted_runs"], {"run_id": run_id}).fetchall()
            conn.execute(q["start_run"], {"run_id": run_id})
        if closed:
            log.warning("marked %d interrupted ETL run(s) failed: %s", len(closed),
                        ", ".join(r[0] for r in closed))
        runner = StageRunner(settings, db_url, landing=landing, thresholds=thresholds,
                             lock=False)
        try:
            for stage in STAGES:
                if progress:
                    progress(stage, 0.0)
                results[stage] = runner.run(stage, run_id, progress=progress, as_of=as_of)
                if progress:
                    progress(stage, 1.0)
                if after_stage:
                    after_stage(stage)
        except BaseException as exc:
            _record_failure(db_url, run_id, exc)
            raise
        finally:
            runner.close()
        summary = _summary(run_id, results, time.perf_counter() - started)
        with db.connect(db_url) as conn, db.admin(conn):
            conn.execute(q["finish_run"], {
                "run_id": run_id, "status": "succeeded", "files": summary.files,
                "rows_in": summary.rows_in, "rows_quarantined": summary.rows_quarantined,
                "rows_late": summary.rows_late, "hours_upserted": summary.hours_upserted,
                "error": None})
        return summary


def release_memory(con: Any, above_bytes: int) -> bool:
    """Give a finished stage's memory back to the system; True when ``con`` was closed.

    A DuckDB instance keeps what it allocated for a stage's scans and aggregations until it
    closes, well beyond what ``duckdb_memory()`` reports and beyond what dropping its temp
    tables gives back; with one connection for every stage, a first load's peak in gold would
    sit on top of silver's leftovers (bench/bench_etl.py reports the full phase's peak RSS).
    So a connection is closed once the process holds more than ``above_bytes``
    (:attr:`Thresholds.reconnect_above_bytes`); every stage reads the lake and PostgreSQL, never
    an earlier stage's DuckDB tables, so nothing is lost. A kept connection's temp tables are
    dropped. Neither Arrow's allocator nor glibc's returns freed memory to the system on its
    own, so both are trimmed either way.
    """
    closed = _resident_bytes() > above_bytes
    if closed:
        con.close()
    else:
        for (name,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall():
            con.execute(f'DROP TABLE IF EXISTS temp."{name.replace(chr(34), chr(34) * 2)}"')
    _trim()
    return closed


def _trim() -> None:
    """Return what Arrow's and glibc's allocators hold freed to the system."""
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        # glibc's malloc_trim, from the symbols already loaded into the process (no library
        # search); other C libraries have none
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def _resident_bytes() -> int:
    """This process's resident memory (0 where /proc is missing: connections are kept)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _summary(run_id: str, results: dict[str, BaseModel], seconds: float) -> EtlRunReport:
    bronze = results["bronze"]
    silver = results["silver"]
    aggregates = results["aggregates"]
    assert isinstance(bronze, BronzeResult) and isinstance(silver, SilverResult)
    assert isinstance(aggregates, AggregatesResult)
    assert isinstance(results["gold"], GoldResult)
    assert isinstance(results["quality"], QualityResult)
    return EtlRunReport(run_id=run_id, files=bronze.files, rows_in=silver.rows_in,
                      rows_quarantined=silver.rows_quarantined, rows_late=silver.late,
                      duplicates=silver.duplicates, hours_upserted=aggregates.rows_upserted,
                      seconds=round(seconds, 3), quarantined=silver.quarantined,
                      changed=aggregates.changed)


def _record_failure(db_url: str, run_id: str, exc: BaseException) -> None:
    """Mark the run failed on a fresh connection (the run's own may be unusable)."""
    try:
        with db.connect(db_url) as conn, db.admin(conn):
            conn.execute(db.queries("etl")["finish_run"], {
                "run_id": run_id, "status": "failed", "files": 0, "rows_in": 0,
                "rows_quarantined": 0, "rows_late": 0, "hours_upserted": 0,
                "error": f"{type(exc).__name__}: {exc}"[:2000]})
    except Exception:  # the original error matters more than the bookkeeping
        pass
