"""The sizes at which the ETL changes method.

Every method gives the same rows (the tests hold them to each other and to independent
oracles); a threshold only picks the one that is cheaper at a given size, as
``bench/bench_etl.py`` measures for the hourly run and a week's first load. The pipeline takes
them as one :class:`Thresholds` value (``run_pipeline(..., thresholds=...)``), so a test takes a
path on a few rows by passing another value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """Where each of the ETL's size-dependent choices switches method."""

    #: Output hours per compressor up to which gold's windows and silver's trailing
    #: baselines are computed by joining each output row to its own 24 h of partials,
    #: rather than over all hours (the hour grid or window functions): the join's cost grows
    #: with the pairs of output and context rows, a pass over the hours with every context
    #: row, so the join wins for the hourly run's one new hour and loses for a bulk load.
    join_max_hours: int = 12
    #: Hours of gold's partials the hot cache keeps (:mod:`etl.hot`): the hourly run needs the
    #: 24 behind the new hour; the rest lets batches arriving up to a day late use it too.
    #: 0: no cache (every reader takes gold's long rows).
    hot_hours: int = 48
    #: Kept compressor-hours up to which silver sums a bulk load's trailing baselines on the
    #: hour grid (:func:`etl.windows.trailing_sums`): the grid's limits (48 doubles per cell)
    #: live in Python memory, which cannot spill, so larger loads take DuckDB's window
    #: functions, which can. A week of 4,500 units is 756,000.
    grid_max_hours: int = 1_000_000
    #: Bronze rows (by the Delta log's counts) up to which silver's batch is small: it is read
    #: from bronze once into a temporary table rather than by each query over view ``valid``,
    #: and its hourly partials are grouped in numpy (:mod:`etl.partials`). Bulk batches stay
    #: views: materializing every stage of millions of wide rows makes DuckDB spill.
    small_batch_rows: int = 250_000
    #: Input rows up to which a stage's DuckDB work runs on one thread: the hourly run's
    #: statements are small, and a second thread buys no time while taking CPU from the work
    #: beside it (delta-rs's writer, PostgreSQL, the quality thread).
    one_thread_rows: int = 250_000
    #: Resident bytes above which a finished stage's DuckDB connection is closed (the next
    #: stage opens a new one) rather than kept: below it (the hourly run) there is little to
    #: give back (see :func:`etl.pipeline.release_memory`).
    reconnect_above_bytes: int = 1 << 30


#: The thresholds production runs with.
DEFAULT_THRESHOLDS = Thresholds()
