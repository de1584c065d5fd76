"""The medallion pipeline: landing -> bronze -> silver -> gold -> PostgreSQL -> data quality.

Two ways in:

* :func:`run_pipeline` runs every stage under the lake's writer lock, records the run in
  ``etl_runs`` and returns an :class:`~etl.models.EtlRunReport` (including the changed
  ``(org, compressor, hour range)`` list for rule evaluation). ``altaviz etl run`` and the
  scheduled pipeline's ETL activity (``worker.etl_runner``) call it. In a small run (the
  hourly one) quality runs on its own thread beside the aggregates stage
  (:func:`_quality_beside`).
* :func:`run_stage` runs one stage on its own (its own connections and lock); the tests use
  it to run stages separately and out of order. Every stage is idempotent and catches up on
  whatever earlier stages produced that it has not seen, so a retried or re-ordered stage
  cannot lose or double anything.

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
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from altaviz.core import db, duck
from altaviz.core.settings import Settings
from etl.aggregates import compressor_orgs, stage_mark, upsert_aggregates
from etl.bronze import bronze_ingest
from etl.carry import Carry
from etl.gold import gold_features
from etl.lake import Lake
from etl.ledger import LandingFile, pending
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
from etl.stage_process import run_in_child
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
        #: rows the stages of one run hand each other in this process (etl.carry); only
        #: :func:`run_pipeline` sets it: a stage run alone or in a child process has no next
        #: stage here to take them
        self.carry: Carry | None = None

    def duck(self, share: int = 100, threads: int | None = None) -> Any:
        """A DuckDB connection limited to ``share`` percent of ``etl_memory_mb``, on
        ``threads`` threads (default: ``etl_threads``)."""
        return duck.connect(temp_directory=self.lake.root / "_tmp",
                            memory_limit=f"{self.settings.etl_memory_mb * share // 100}MB",
                            threads=threads or self.settings.etl_threads)


def _run(ctx: _Context, stage: Stage, con: Any, conn: psycopg.Connection[Any], run_id: str,
         progress: Progress | None, as_of: datetime | None) -> BaseModel:
    """Run one stage on the given connections, in this process."""
    s = ctx.settings
    if stage == "bronze":
        return bronze_ingest(con, ctx.lake, ctx.landing, progress, files=ctx.pending)
    if stage == "silver":
        return silver_transform(con, ctx.lake, compressor_orgs(conn), s.late_arrival_minutes,
                                progress, carry=ctx.carry, thresholds=ctx.thresholds)
    if stage == "gold":
        return gold_features(con, ctx.lake, progress, memory_mb=s.etl_memory_mb,
                             carry=ctx.carry, bucket_hours=s.etl_bucket_hours,
                             thresholds=ctx.thresholds)
    if stage == "aggregates":
        return upsert_aggregates(con, ctx.lake, conn, ctx.db_url, run_id, progress,
                                 carry=ctx.carry, copy_streams=s.etl_copy_streams)
    return quality_checks(con, ctx.lake, conn, run_id, s.freshness_sla_minutes, as_of,
                          db_url=ctx.db_url)


def run_stage(stage: Stage, settings: Settings, db_url: str, *, landing: Path | None = None,
              run_id: str | None = None, as_of: datetime | None = None,
              thresholds: Thresholds = DEFAULT_THRESHOLDS) -> BaseModel:
    """Run one stage (``bronze``, ``silver``, ``gold``, ``aggregates`` or ``quality``).

    A stage with more input rows than ``settings.etl_child_process_rows`` runs in a child
    process (see :func:`_execute`). ``thresholds``: where the stage changes method by size.

    Returns the stage's result model (:class:`BronzeResult`, :class:`SilverResult`,
    :class:`GoldResult`, :class:`AggregatesResult` or :class:`QualityResult`).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    tune_allocator()
    ctx = _Context(settings, db_url, landing, thresholds)
    with ctx.lake.writer_lock():
        ctx.lake.ensure()
        con = ctx.duck()
        try:
            with db.connect(db_url) as conn:
                result, con = _execute(ctx, stage, con, conn, run_id or new_run_id(), None,
                                       as_of)
                return result
        finally:
            if con is not None:
                con.close()


def _execute(ctx: _Context, stage: Stage, con: Any, conn: psycopg.Connection[Any],
             run_id: str, progress: Progress | None, as_of: datetime | None
             ) -> tuple[BaseModel, Any]:
    """Run a stage in this process or, when its input is large, in a child process.

    A bulk stage leaves hundreds of MB in the process that no trim returns (see
    :mod:`etl.stage_process`); in a child process they go back to the system when it exits,
    so a first load peaks at its largest stage, not at the sum of the leftovers. The hourly
    run's stages are far below the threshold and stay in this process: starting a process
    and importing DuckDB, Arrow and delta-rs again would cost more than such a stage itself
    (bench/bench_etl.py, hour phase).

    Returns the stage's result and the DuckDB connection to use next (None once closed).
    """
    rows = _input_rows(ctx, stage, con, conn)
    if rows <= ctx.settings.etl_child_process_rows:
        threads = 1 if rows <= ctx.thresholds.one_thread_rows else ctx.settings.etl_threads
        con.execute(f"SET threads = {int(threads)}")
        return _run(ctx, stage, con, conn, run_id, progress, as_of), con
    log.info("ETL stage %s: ~%d input rows, running it in a child process", stage, rows)
    con.close()  # the child opens its own; this one's memory goes back first
    _trim()
    return run_in_child(stage, _stage_in_child, (
        stage, ctx.settings, ctx.db_url, ctx.landing, run_id, as_of, ctx.thresholds),
        progress), None


def _stage_in_child(stage: Stage, settings: Settings, db_url: str, landing: Path,
                    run_id: str, as_of: datetime | None,
                    thresholds: Thresholds = DEFAULT_THRESHOLDS, *,
                    progress: Progress) -> BaseModel:
    """A stage's body in the child process: its own connections, no lock (the parent,
    which waits for it, holds the lake's writer lock)."""
    tune_allocator()
    return _run_alone(stage, settings, db_url, landing, run_id, as_of, progress,
                      share=CHILD_MEMORY_SHARE.get(stage, 100), thresholds=thresholds)


def _run_alone(stage: Stage, settings: Settings, db_url: str, landing: Path, run_id: str,
               as_of: datetime | None, progress: Progress | None, *, share: int,
               threads: int | None = None,
               thresholds: Thresholds = DEFAULT_THRESHOLDS) -> BaseModel:
    """Run one stage on DuckDB and PostgreSQL connections of its own (``share`` percent of
    the DuckDB memory limit, ``threads`` threads: default ``etl_threads``), closed
    afterwards."""
    ctx = _Context(settings, db_url, landing, thresholds)
    con = ctx.duck(share, threads)
    try:
        with db.connect(db_url) as conn:
            return _run(ctx, stage, con, conn, run_id, progress, as_of)
    finally:
        con.close()


#: Share (percent) of ``etl_memory_mb`` DuckDB gets in a stage's child process. Silver's bulk
#: write streams DuckDB's result into delta-rs, whose buffers are not DuckDB's to limit, and
#: silver keeps only its rejected rows in DuckDB, so a smaller limit lowers its peak at the
#: same speed. Gold sets its own (``GRID_MEMORY_SHARE``); the aggregates stage keeps the full
#: limit, as less slows its COPY (bench/bench_etl.py, full phase, measures both).
CHILD_MEMORY_SHARE: dict[str, int] = {"silver": 67}


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
    """Run every stage in order and record the run in ``etl_runs``; quality, which needs
    only silver, runs beside the aggregates stage when its input is small.

    Args:
        settings: lake_path, landing_path, late_arrival_minutes, freshness_sla_minutes.
        db_url: PostgreSQL URL (as the owner role; tenant work switches role per org).
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
    tune_allocator()
    ctx = _Context(settings, db_url, landing, thresholds)
    ctx.carry = Carry()
    run_id = run_id or new_run_id()
    q = db.queries("etl")
    started = time.perf_counter()
    results: dict[str, BaseModel] = {}
    with ctx.lake.writer_lock():
        ctx.lake.ensure()
        with db.connect(db_url) as conn:
            with db.admin(conn):
                closed = conn.execute(q["close_interrupted_runs"],
                                      {"run_id": run_id}).fetchall()
                conn.execute(q["start_run"], {"run_id": run_id})
            if closed:
                log.warning("marked %d interrupted ETL run(s) failed: %s", len(closed),
                            ", ".join(r[0] for r in closed))
            con = None
            # leaving the block waits for quality when it runs beside the aggregates stage
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-quality") as pool:
                beside: Future[BaseModel] | None = None
                try:
                    for stage in STAGES:
                        if stage == "quality" and beside is not None:
                            results[stage] = beside.result()
                        else:
                            if progress:
                                progress(stage, 0.0)
                            if con is None:
                                con = ctx.duck()
                            results[stage], con = _execute(ctx, stage, con, conn, run_id,
                                                           progress, as_of)
                            if con is not None and release_memory(
                                    con, thresholds.reconnect_above_bytes):
                                con = None
                        if progress:
                            progress(stage, 1.0)
                        if after_stage:
                            after_stage(stage)
                        if stage == "gold" and _quality_fits_beside(ctx, conn):
                            if progress:
                                progress("quality", 0.0)
                            beside = pool.submit(_quality_beside, ctx.settings, db_url,
                                                 ctx.landing, run_id, as_of)
                except BaseException as exc:
                    _record_failure(db_url, run_id, exc)
                    raise
                finally:
                    if con is not None:
                        con.close()
            summary = _summary(run_id, results, time.perf_counter() - started)
            with db.admin(conn):
                conn.execute(q["finish_run"], {
                    "run_id": run_id, "status": "succeeded", "files": summary.files,
                    "rows_in": summary.rows_in, "rows_quarantined": summary.rows_quarantined,
                    "rows_late": summary.rows_late, "hours_upserted": summary.hours_upserted,
                    "error": None})
            return summary


#: Share (percent) of ``etl_memory_mb`` for the DuckDB instance of quality running beside
#: the aggregates stage (:func:`_quality_beside`): its scans of one hour's batch need little,
#: and the stages' own instance keeps the full limit.
QUALITY_BESIDE_MEMORY_SHARE = 25


def _quality_fits_beside(ctx: _Context, conn: psycopg.Connection[Any]) -> bool:
    """Whether quality may run beside the aggregates stage: when it would run in this process
    anyway (its input under ``etl_child_process_rows``, as in the hourly run). A bulk load
    keeps one stage at a time, so two bulk stages never hold memory at once."""
    return _input_rows(ctx, "quality", None, conn) <= ctx.settings.etl_child_process_rows


def _quality_beside(settings: Settings, db_url: str, landing: Path, run_id: str,
                    as_of: datetime | None) -> BaseModel:
    """The quality stage on its own connections, in a thread beside the aggregates stage.

    Quality reads only silver and quarantine, which are complete once silver has committed,
    and writes only its own rows and mark, so it need not wait for the later stages: in the
    hourly run most of its time is PostgreSQL inserting ~18,000 check rows, which overlaps
    the aggregates stage (itself mostly PostgreSQL's COPY) instead of following it. Started
    right after silver it would compete with gold's DuckDB work for the cores instead
    (bench/bench_etl.py, hour phase). Its freshness takes the batch's
    own latest readings into account, so it does not depend on the aggregates stage having
    advanced the watermarks first."""
    return _run_alone("quality", settings, db_url, landing, run_id, as_of, None,
                      share=QUALITY_BESIDE_MEMORY_SHARE, threads=1)


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


#: glibc's ``mallopt`` parameters (malloc.h) and the values :func:`tune_allocator` sets: blocks
#: up to 32 MB (glibc's upper limit) come from the heap instead of a mapping of their own,
#: and up to 64 MB freed at the heap's top stay there for the next allocation.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 32 << 20, 64 << 20


def tune_allocator() -> None:
    """Make glibc's malloc reuse freed blocks of the ETL's arrays instead of unmapping them.

    Why: numpy's grids, Arrow conversions and delta-rs's buffers are MBs each, above glibc's
    default mmap threshold, so each one would be a new mapping whose every page faults on
    first touch and is unmapped when freed: a bulk load would spend a noticeable share of its
    CPU time in the kernel (bench/bench_etl.py, full phase, reports its CPU seconds). Memory goes
    back between stages all the same: :func:`release_memory` trims the heap
    (``malloc_trim``). No effect off glibc.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None)
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


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
