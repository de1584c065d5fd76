"""Silver: typed, validated readings; everything else to quarantine with a reason.

For the bronze batches silver has not incorporated yet (``silver mark < batch <= bronze
mark``), in one pass:

1. **Validate** each row (:func:`etl.metrics.reason_sql`): a reading that cannot be placed
   (null compressor or timestamp, bad timestamp, unknown compressor: not in PostgreSQL
   ``compressors``; this is also where the row gets its ``org_id``) goes to the quarantine
   table. A channel value that is not a number, NaN/inf or outside the channel's
   plausibility range is that channel missing for that reading
   (:func:`etl.metrics.clean_channels`); the rest of the reading is kept, and the data-quality
   stage counts the missing channel.
2. **Deduplicate** on (org_id, compressor_id, ts), against the batch and against silver: an exact
   copy (same channel values) is dropped and counted; a different reading for an instant
   already held is quarantined as ``conflicting_duplicate`` (never silently dropped).
3. **Flag**: ``late`` when ``arrived_at - ts`` exceeds ``late_arrival_minutes``;
   ``outlier_metrics`` lists each metric more than 4 sigma from the compressor's own trailing
   24-hour baseline of that metric (hourly partials of the preceding 24 hours, taken from gold
   plus the batch itself; at least 12 readings). Flags are as known when the reading is
   loaded. Flagged rows stay in silver.

The quarantine commit comes first and the silver commit last; each records the batch mark,
so a crash between them redoes only what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.duck import table_from_arrow
from altaviz.core.telemetry import CHANNELS, METRICS
from etl.carry import Carried, Carry
from etl.handoff import SUMS_SCHEMA, FlagTally, Handoff
from etl.hot import HotPartials
from etl.lake import QUARANTINE_SCHEMA, SILVER_SCHEMA, Lake, conform, conform_reader
from etl.ledger import dates_between, source_org_sql, sql_dates
from etl.limits import trailing_limits
from etl.metrics import (
    MIN_BASELINE_READINGS,
    OUTLIER_SIGMAS,
    VAR_EPS,
    channel_list,
    clean_channels,
    hour_of,
    metric_columns,
    more_than_minutes_after,
    partial_aggregates,
    q,
    reason_sql,
    unpivot_partials,
    utc_date_of,
)
from etl.models import SilverResult
from etl.partials import hourly_partials
from etl.thresholds import DEFAULT_THRESHOLDS, Thresholds
from etl.windows import cell_sql, grid_blocks, marked_names, sample_std, trailing_sums

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
#: Metrics that are channels: a reading's value is its channel's column.
_CHANNEL_NAMES = frozenset(c.name for c in CHANNELS) & frozenset(m.name for m in METRICS)


def _org_table(con: duckdb.DuckDBPyConnection, orgs: dict[str, str],
               fleet: list[tuple[str, str]]) -> None:
    table_from_arrow(con, "orgs", pa.table({
        "compressor_id": pa.array(list(orgs), pa.string()),
        "org_id": pa.array(list(orgs.values()), pa.string())}))
    table_from_arrow(con, "fleet", pa.table({
        "org_id": pa.array([f[0] for f in fleet], pa.string()),
        "compressor_id": pa.array([f[1] for f in fleet], pa.string())}))


def attributed(rows: str) -> str:
    """SQL: bronze ``rows`` with the organization each reading belongs to.

    A file under an organization's landing prefix (``LANDING/<org_id>/...``) speaks for that
    organization only: its reading belongs to that organization's compressor of that id
    (compressor ids are unique within an organization only, and the lake keys every reading
    by ``(org_id, compressor_id)``), and a compressor of another organization is
    ``other_organization`` (nothing of the other's changes). A file of the flat (legacy)
    layout has no tenant identity: it is attributed by a compressor id that exactly one
    organization holds, and an id two organizations share is ``ambiguous_compressor``. Adds
    ``org_id`` (null: not attributable), ``source_org`` and ``attribution`` (the reason when
    not attributable).
    """
    return f"""(SELECT b.* EXCLUDE (src),
               CASE WHEN b.src IS NULL THEN o.org_id ELSE f.org_id END AS org_id,
               b.src AS source_org,
               CASE WHEN b.src IS NULL AND n.orgs > 1 THEN 'ambiguous_compressor'
                    WHEN b.src IS NOT NULL AND f.org_id IS NULL AND n.orgs >= 1
                        THEN 'other_organization' END AS attribution
        FROM (SELECT *, {source_org_sql()} AS src FROM {rows}) b
        LEFT JOIN fleet f ON f.org_id = b.src AND f.compressor_id = b.compressor_id
        LEFT JOIN orgs o ON o.compressor_id = b.compressor_id
        LEFT JOIN (SELECT compressor_id, count(*) AS orgs FROM fleet GROUP BY compressor_id) n
               ON n.compressor_id = b.compressor_id)"""


def silver_transform(con: duckdb.DuckDBPyConnection, lake: Lake, orgs: dict[str, str],
                     late_arrival_minutes: int, progress: Progress | None = None,
                     carry: Carry | None = None,
                     thresholds: Thresholds = DEFAULT_THRESHOLDS,
                     fleet: list[tuple[str, str]] | None = None) -> SilverResult:
    """Validate, deduplicate and flag the bronze batches silver still owes; idempotent.

    Args:
        con: a connection from :func:`altaviz.core.duck.connect`.
        lake: the lake.
        orgs: compressor_id -> org_id for every known compressor (from PostgreSQL).
        late_arrival_minutes: ``settings.late_arrival_minutes``.
        progress: optional callback ``(stage, fraction)``.
        carry: where to leave each compressor's latest reading of the batches written, for
            the aggregates stage of the same run (:mod:`etl.carry`).
        thresholds: the sizes at which silver changes method (a small batch, the join of
            each hour to its baseline, the hour grid, the hot cache's span).
        fleet: ``(org_id, compressor_id)`` of every compressor (from PostgreSQL), for files
            under an organization's landing prefix; default: the pairs of ``orgs``.
    """
    lo, hi = lake.batch_mark("silver"), lake.batch_mark("bronze")
    if hi <= lo:
        return SilverResult()
    files = lake.files_for_batches("bronze", lo, hi)
    dates = {value for value, _ in files}
    handoff = Handoff(lake.root)
    handoff.discard()   # partials of earlier batches: never gold's to use now
    _org_table(con, orgs, fleet if fleet is not None else [(o, c) for c, o in orgs.items()])
    reason, detail = reason_sql()
    in_batch = f"""(SELECT * EXCLUDE (loaded_at) FROM delta_scan('{lake.uri("bronze")}')
                 WHERE arrival_date IN ({sql_dates(dates)})
                   AND batch_id > {lo} AND batch_id <= {hi})"""
    small = sum(n for _, n in files) <= thresholds.small_batch_rows
    if small:
        con.execute(f"CREATE OR REPLACE TEMP TABLE bronze_batch AS SELECT * FROM {in_batch}")
        in_batch = "bronze_batch"
    # Only the rejected rows are kept (a small share); the valid ones are read from bronze by
    # each query that needs them. Every row of a bulk batch classified in one table would
    # spill beyond DuckDB's limit, and each of the scans below would read it back from disk
    # (bench/bench_etl.py, full phase). The detail is computed for rejected rows only, by
    # the quarantine query.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE rejected AS
        SELECT * FROM (SELECT b.*, {reason} AS reason FROM {attributed(in_batch)} b)
        WHERE reason IS NOT NULL
    """)
    if progress:
        progress("silver", 0.2)
    chan = channel_list()
    # valid rows (bad channel values nulled), with a hash of their values to tell exact copies
    # from conflicting readings; views, not copies: materialising every stage of millions of
    # wide rows would spill GBs. A row without a reason has a known compressor, so the join to
    # ``orgs`` keeps it.
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW valid AS
        SELECT c.*, hash({chan}) AS vhash, {utc_date_of("ts")} AS date
        FROM (SELECT b.* EXCLUDE (source_org, attribution) REPLACE ({clean_channels("b.")})
              FROM {attributed(in_batch)} b
              ANTI JOIN rejected r USING (source_file, source_row)
              WHERE b.org_id IS NOT NULL) c
    """)
    by_date = con.execute("SELECT date, min(ts), max(ts) FROM valid GROUP BY date").fetchall()
    valid_dates = {r[0] for r in by_date}
    # the batch's time span lets the Parquet reader skip row groups of other hours
    span_ts = (f"AND ts >= '{min(r[1] for r in by_date).isoformat()}'::TIMESTAMPTZ "
               f"AND ts <= '{max(r[2] for r in by_date).isoformat()}'::TIMESTAMPTZ"
               if by_date else "")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE existing AS
        SELECT org_id, compressor_id, ts, hash({chan}) AS vhash
        FROM delta_scan('{lake.uri("silver")}')
        WHERE date IN ({sql_dates(valid_dates)}) {span_ts}
          AND compressor_id IN (SELECT DISTINCT compressor_id FROM valid)
    """)
    # only keys seen more than once need ranking (a small share of rows); ``existing`` may
    # hold readings of another organization's compressor of the same id: they never share
    # a key with the batch's
    con.execute("""
        CREATE OR REPLACE TEMP TABLE ranked AS
        WITH keys AS (
            SELECT org_id, compressor_id, ts FROM (
                SELECT org_id, compressor_id, ts FROM valid
                UNION ALL SELECT org_id, compressor_id, ts FROM existing
            ) GROUP BY ALL HAVING count(*) > 1
        ), cand AS (
            SELECT e.org_id, e.compressor_id, e.ts, e.vhash, 0 AS is_new,
                   NULL::TIMESTAMPTZ AS arrived_at, NULL::VARCHAR AS source_file,
                   NULL::BIGINT AS source_row
            FROM existing e SEMI JOIN keys USING (org_id, compressor_id, ts)
            UNION ALL
            SELECT v.org_id, v.compressor_id, v.ts, v.vhash, 1, v.arrived_at, v.source_file,
                   v.source_row
            FROM valid v SEMI JOIN keys USING (org_id, compressor_id, ts)
        )
        SELECT *, row_number() OVER w AS rn, first_value(vhash) OVER w AS first_hash
        FROM cand
        WINDOW w AS (PARTITION BY org_id, compressor_id, ts
                     ORDER BY is_new, arrived_at, source_file, source_row)
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE dropped AS
        SELECT source_file, source_row,
               CASE WHEN vhash = first_hash THEN 'duplicate' ELSE 'conflicting_duplicate' END
                   AS kind
        FROM ranked WHERE is_new = 1 AND rn > 1
    """)
    if progress:
        progress("silver", 0.4)
    flagging = _flag_outliers(con, lake, late_arrival_minutes, thresholds, small)
    if progress:
        progress("silver", 0.7)

    # quarantine: invalid rows plus conflicting duplicates
    q_cols = ", ".join(f.name for f in QUARANTINE_SCHEMA)
    quarantine_sql = f"""
        SELECT {q_cols} FROM (
            SELECT reason, {detail} AS detail, org_id, compressor_id, ts, arrived_at, {chan},
                   invalid_values, source_file, source_row, batch_id, arrival_date
            FROM rejected
            UNION ALL
            SELECT 'conflicting_duplicate', 'differs from an earlier reading at this ts',
                   v.org_id, v.compressor_id, v.ts, v.arrived_at, {channel_list("v.")},
                   v.invalid_values, v.source_file, v.source_row, v.batch_id, v.arrival_date
            FROM valid v JOIN dropped d USING (source_file, source_row)
            WHERE d.kind = 'conflicting_duplicate'
        )
    """
    counts = dict(con.execute(f"SELECT reason, count(*) FROM ({quarantine_sql}) GROUP BY 1")
                  .fetchall())
    q_mark = lake.batch_mark("quarantine")
    if q_mark < hi:
        # Only batches quarantine has not recorded: after a crash between the quarantine and
        # silver commits, new bronze batches may have arrived before the re-run, which then
        # spans both; writing the whole span again would duplicate the earlier ones' rows.
        reader = con.execute(f"SELECT * FROM ({quarantine_sql}) WHERE batch_id > {int(q_mark)}"
                             ).to_arrow_reader(250_000)
        lake.append("quarantine", conform_reader(reader, QUARANTINE_SCHEMA), hi)
    # batches of one Parquet row group: larger ones raise a bulk load's peak memory at the
    # same speed (bench/bench_etl.py, full phase)
    if flagging is None:
        s_cols = ", ".join(f.name for f in SILVER_SCHEMA)
        rows = conform_reader(con.execute(f"SELECT {s_cols} FROM flagged")
                              .to_arrow_reader(65_536), SILVER_SCHEMA)
    else:
        rows = flagging.flagged(con.execute("SELECT * FROM flagged").to_arrow_reader(65_536))
    # counted while streaming: ``flagged`` is a view, a second pass would recompute it
    valid_rows = late_rows = outlier_rows = 0
    stamps: list[pa.RecordBatch] = []

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal valid_rows, late_rows, outlier_rows
        for batch in rows:
            if carry is not None:
                stamps.append(batch.select(["org_id", "compressor_id", "ts"]))
            valid_rows += batch.num_rows
            late_rows += int(pc.sum(batch.column("late")).as_py() or 0)
            lengths = pc.fill_null(pc.list_value_length(batch.column("outlier_metrics")), 0)
            outlier_rows += int(pc.sum(pc.greater(lengths, 0)).as_py() or 0)
            yield batch

    lake.append("silver", pa.RecordBatchReader.from_batches(SILVER_SCHEMA, counted()), hi)
    if carry is not None:
        carry.latest = Carried(lake.root, lo, hi, _latest(stamps))
    if flagging is not None:
        flagging.commit(lo, hi)   # the partials for gold, if any
    if progress:
        progress("silver", 1.0)
    stats = con.execute(f"""
        SELECT (SELECT count(*) FROM {in_batch}),
               (SELECT count(*) FROM dropped WHERE kind = 'duplicate')
    """).fetchone()
    assert stats is not None
    return SilverResult(batches=list(range(lo + 1, hi + 1)), rows_in=stats[0],
                        rows_valid=valid_rows, duplicates=stats[1], late=late_rows,
                        outliers=outlier_rows,
                        quarantined={str(k): int(v) for k, v in counts.items()})


def _flag_outliers(con: duckdb.DuckDBPyConnection, lake: Lake, late_arrival_minutes: int,
                   thresholds: Thresholds, small: bool = False
                   ) -> _GridLimits | _JoinedPartials | None:
    """Create view ``flagged``: the kept rows with ``late`` and ``outlier_metrics``; or, when
    the baselines were summed on the hour grid (the returned limits), with ``late``, each
    row's cell ``pos`` and its metric values, from which :meth:`_GridLimits.flagged` makes
    ``outlier_metrics``. When the baselines were joined and the batch's partials go to gold
    (the hourly run), the returned :class:`_JoinedPartials` writes them."""
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW kept AS
        SELECT v.*, {hour_of("ts")} AS hour, {metric_columns()}
        FROM valid v ANTI JOIN dropped d USING (source_file, source_row)
    """)
    partial = ", ".join(
        f"count({q(m.name)}) AS n_{i}, sum({q(m.name)}) AS s_{i}, "
        f"sum({q(m.name)} * {q(m.name)}) AS q_{i}" for i, m in enumerate(METRICS))
    span = con.execute("SELECT min(hour), max(hour), "
                       "count(DISTINCT (org_id, compressor_id, hour)), "
                       "count(DISTINCT (org_id, compressor_id)) FROM kept").fetchone()
    # Each compressor-hour's baseline mean and outlier distance (4 sigma; null when the
    # baseline is too thin or flat to judge) are computed once, not once per reading; the
    # list of names is built only for readings that are outliers somewhere (a small share).
    done: _GridLimits | _JoinedPartials | None
    if span is None or span[0] is None:
        done = _baseline_by_window(con, lake, span, partial, thresholds)  # nothing kept
    else:
        done = _baseline(con, lake, span, partial, thresholds, small)
    late = more_than_minutes_after("k.arrived_at", "k.ts", late_arrival_minutes)
    columns = (f"k.org_id, k.compressor_id, k.ts, k.arrived_at, "
               f"{', '.join('k.' + q(c.name) for c in CHANNELS)}, {late} AS late")
    if isinstance(done, _GridLimits):
        metrics = ", ".join(f"k.{q(m.name)} AS m_{i}" for i, m in enumerate(METRICS))
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW flagged AS
            SELECT {columns}, k.source_file, k.batch_id, k.date,
                   {cell_sql("k.hour", "b")} AS pos, {metrics}
            FROM kept k JOIN grid_blocks b USING (org_id, compressor_id)
        """)
        return done
    if isinstance(done, _JoinedPartials):
        # each reading's row of ``limits`` rather than its 48 columns, and only the metrics
        # that are not channels (a channel metric is its channel's column):
        # :meth:`_JoinedPartials.flagged` compares values and limits in numpy, as the grid
        # path does, rather than carrying the 48 limits and copies of the channels through
        # the join and into Arrow.
        derived = "".join(f", k.{q(m.name)} AS m_{i}" for i, m in enumerate(METRICS)
                          if m.name not in _CHANNEL_NAMES)
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW flagged AS
            SELECT {columns}, k.source_file, k.batch_id, k.date,
                   b.rowid AS limit_row{derived}
            FROM kept k LEFT JOIN limits b USING (org_id, compressor_id, hour)
        """)
        done.take_limits(con)
        return done
    outside = [f"abs(k.{q(m.name)} - b.mu_{i}) > b.lim_{i}" for i, m in enumerate(METRICS)]
    names = ", ".join(f"CASE WHEN {o} THEN '{m.name}' END"
                      for o, m in zip(outside, METRICS, strict=True))
    outliers = f"""CASE WHEN {" OR ".join(outside)}
                    THEN list_filter([{names}], x -> x IS NOT NULL)
                    ELSE []::VARCHAR[] END"""
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW flagged AS
        SELECT {columns}, {outliers} AS outlier_metrics, k.source_file, k.batch_id, k.date
        FROM kept k LEFT JOIN limits b USING (org_id, compressor_id, hour)
    """)
    return done


class _GridLimits:
    """Each hour-grid cell's baseline mean (``mu``) and outlier distance (``lim``, 4 sigma;
    NaN where too thin or flat to judge) per metric, from :func:`etl.windows.trailing_sums`.

    Readings are flagged against them in numpy, by their cell, while silver streams to Delta:
    gathering by cell is far cheaper than a DuckDB join of every reading to its
    compressor-hour carrying 48 limit columns (bench/bench_etl.py, full phase).
    """

    def __init__(self, size: int) -> None:
        self.mu = np.full((len(METRICS), size), np.nan)
        self.lim = np.full((len(METRICS), size), np.nan)
        #: what gold takes with the handed sums (etl.handoff): the flag counts, and each
        #: handed row's minimum and maximum per metric (rows in the file's order; a cell's
        #: row in ``row_of``)
        self.tally = FlagTally()
        self.handoff: Handoff | None = None
        self.row_of = np.empty(0, dtype=np.int64)
        self.lo = self.hi = np.empty((len(METRICS), 0))

    def hand_over(self, handoff: Handoff, sums: pa.RecordBatchReader) -> None:
        """Write the batch's hourly sums for gold (columns of :data:`SUMS_SCHEMA`, ``pos``
        this grid's cell) and start their minimum and maximum, filled in by
        :meth:`flagged`."""
        self.handoff = handoff
        try:
            cells = handoff.write_sums(sums)
        except OSError as exc:
            self._give_up(f"cannot write the partials for gold ({exc})")
            return
        self.row_of = np.full(self.mu.shape[1], -1, dtype=np.int64)
        self.row_of[cells] = np.arange(len(cells))
        self.lo = np.full((len(METRICS), len(cells)), np.inf)
        self.hi = np.full((len(METRICS), len(cells)), -np.inf)

    def commit(self, lo: int, hi: int) -> None:
        """Record the handed partials as silver's batches ``lo < batch <= hi`` (after
        silver's commit)."""
        if self.handoff is None:
            return
        try:
            self.handoff.commit(self.lo, self.hi, self.tally.table(), lo, hi)
        except OSError as exc:
            self._give_up(f"cannot write the partials for gold ({exc})")

    def _give_up(self, why: str, level: int = logging.WARNING) -> None:
        _give_up(self.handoff, why, level)
        self.handoff = None

    def store(self, i: int, at: np.ndarray, n: np.ndarray, s: np.ndarray, q: np.ndarray
              ) -> None:
        """Metric ``i``'s limits at cells ``at`` from their trailing sums, as
        :func:`_limits_from_baseline` computes them (same operations, same doubles)."""
        sd = sample_std(n, s, q)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.mu[i, at] = s / n
        self.lim[i, at] = np.where((n >= MIN_BASELINE_READINGS) & (sd > 0),
                                   OUTLIER_SIGMAS * sd, np.nan)

    def flagged(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        """Silver rows (:data:`SILVER_SCHEMA`) from view ``flagged``'s grid form: each
        metric value more than ``lim`` from ``mu`` of its cell names that metric in
        ``outlier_metrics`` (in :data:`METRICS` order; an empty list when none)."""
        metric_names = pa.array([m.name for m in METRICS], pa.string())
        for batch in reader:
            pos = batch.column("pos").to_numpy()
            row = self.row_of[pos] if self.handoff is not None else None
            if row is not None and (row < 0).any():
                # cannot happen (the sums are the kept readings' hours)
                self._give_up("a reading outside the hours handed to gold", logging.ERROR)
                row = None
            marks = np.empty((batch.num_rows, len(METRICS)), dtype=bool)
            for i in range(len(METRICS)):
                x = pc.fill_null(batch.column(f"m_{i}"), np.nan).to_numpy()
                with np.errstate(invalid="ignore"):
                    # NaN (no value, no judgeable baseline) compares false, as NULL does in SQL
                    marks[:, i] = np.abs(x - self.mu[i, pos]) > self.lim[i, pos]
                if row is not None:
                    # NaN is no value (metric values are finite: channels are validated,
                    # ratios guarded by nullif), which fmin and fmax pass over
                    np.fmin.at(self.lo[i], row, x)
                    np.fmax.at(self.hi[i], row, x)
            if row is not None:
                self.tally.add(batch, marks)
            columns = {name: batch.column(name) for name in batch.schema.names}
            columns["outlier_metrics"] = marked_names(marks, metric_names)
            yield from conform(pa.table({f.name: columns[f.name] for f in SILVER_SCHEMA}),
                               SILVER_SCHEMA).to_batches()


def _give_up(handoff: Handoff | None, why: str, level: int = logging.WARNING) -> None:
    """Drop the handoff: it is only a shortcut, and without it gold reads silver."""
    log.log(level, "silver: %s; gold will read silver instead", why)
    if handoff is not None:
        handoff.discard()


def _latest(stamps: list[pa.RecordBatch]) -> pa.Table:
    """``org_id, compressor_id, ts``: each compressor's latest reading among ``stamps``
    (silver rows' keys), as :func:`etl.aggregates._watermarks` reads them back."""
    keys = pa.Table.from_batches(stamps, schema=pa.schema(
        [SILVER_SCHEMA.field(n) for n in ("org_id", "compressor_id", "ts")]))
    latest = keys.group_by(["org_id", "compressor_id"], use_threads=False).aggregate(
        [("ts", "max")])
    return latest.select(["org_id", "compressor_id", "ts_max"]).rename_columns(
        ["org_id", "compressor_id", "ts"])


class _JoinedPartials:
    """The partials of a batch whose baselines were joined to the hot cache (the hourly
    run), handed to gold as the grid's are (:mod:`etl.handoff`): the count, sum, sum of
    squares, minimum and maximum of ``kept_wide``, and the flag counts, tallied as the rows
    stream to Delta (:meth:`flagged`).

    Gold would otherwise read the batch's readings back from silver for the same partials and
    counts, a noticeable share of the hourly run; tallying the flags while the rows stream by is
    cheaper than a query of the flagged readings (bench/bench_etl.py, hour phase)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, handoff: Handoff) -> None:
        self.con, self.handoff = con, handoff
        self.tally = FlagTally()
        #: each metric's baseline mean and outlier distance by row of table ``limits``; the
        #: last column (NaN) is a reading's whose hour has no row
        self.mu = self.lim = np.full((len(METRICS), 1), np.nan)

    def take_limits(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read table ``limits`` into :attr:`mu` and :attr:`lim`, by row id."""
        table = con.execute("SELECT rowid AS r, * FROM limits").to_arrow_table()
        rows = table.column("r").to_numpy()
        size = int(rows.max()) + 2 if len(rows) else 1
        self.mu = np.full((len(METRICS), size), np.nan)
        self.lim = np.full((len(METRICS), size), np.nan)
        for i in range(len(METRICS)):
            self.mu[i, rows] = pc.fill_null(table.column(f"mu_{i}"), np.nan).to_numpy()
            self.lim[i, rows] = pc.fill_null(table.column(f"lim_{i}"), np.nan).to_numpy()

    def flagged(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        """Silver rows (:data:`SILVER_SCHEMA`) from view ``flagged`` (each reading's row of
        ``limits``, ``limit_row``, and the values ``m_i`` of the metrics that are not
        channels), their outliers and late readings counted on the way.

        A value more than its hour's ``lim_i`` from its ``mu_i`` names its metric in
        ``outlier_metrics`` (in :data:`METRICS` order; empty when none), as the SQL path's
        ``CASE`` and ``list_filter`` do, with the same doubles; in numpy because those
        comparisons and the list are a noticeable part of the hourly run's silver in DuckDB
        (bench/bench_etl.py, hour phase)."""
        names = pa.array([m.name for m in METRICS], pa.string())
        for batch in reader:
            at = pc.fill_null(batch.column("limit_row"), self.mu.shape[1] - 1).to_numpy()
            values = [batch.column(m.name if m.name in _CHANNEL_NAMES else f"m_{i}")
                      for i, m in enumerate(METRICS)]
            marks = np.empty((batch.num_rows, len(METRICS)), dtype=bool)
            for i, value in enumerate(values):
                x = pc.fill_null(value, np.nan).to_numpy()
                with np.errstate(invalid="ignore"):
                    # NaN (no value, no row of limits, a baseline too thin) compares false,
                    # as NULL does in SQL
                    marks[:, i] = np.abs(x - self.mu[i, at]) > self.lim[i, at]
            self.tally.add(pa.RecordBatch.from_arrays(
                [batch.column(c) for c in ("org_id", "compressor_id", "ts", "late")] + values,
                names=["org_id", "compressor_id", "ts", "late"]
                + [f"m_{i}" for i in range(len(values))]),
                marks)
            columns = {name: batch.column(name) for name in batch.schema.names}
            columns["outlier_metrics"] = marked_names(marks, names)
            yield from conform(pa.table({f.name: columns[f.name] for f in SILVER_SCHEMA}),
                               SILVER_SCHEMA).to_batches()

    def commit(self, lo: int, hi: int) -> None:
        """Write the set and record it as silver's batches ``lo < batch <= hi`` (after
        silver's commit, as :meth:`_GridLimits.commit`)."""
        sums = ", ".join(f"n_{i}, s_{i}, q_{i}, lo_{i}, hi_{i}" for i in range(len(METRICS)))
        # no silver grid here: cell -1 (gold places every handed row on its own grid)
        rows = self.con.execute(f"SELECT org_id, compressor_id, hour, -1::BIGINT AS pos, "
                                f"{sums} FROM kept_wide").to_arrow_table()

        def extremes(name: str, fill: float) -> np.ndarray:
            return np.stack([pc.fill_null(rows.column(f"{name}_{i}"), fill).to_numpy()
                             for i in range(len(METRICS))]).reshape(len(METRICS), -1)
        try:
            self.handoff.write_sums(rows.select(SUMS_SCHEMA.names).to_reader())
            self.handoff.commit(extremes("lo", np.inf), extremes("hi", -np.inf),
                                self.tally.table(), lo, hi)
        except OSError as exc:
            _give_up(self.handoff, f"cannot write the partials for gold ({exc})")


def _limits_from_baseline(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table ``limits`` (``org_id, compressor_id, hour, mu_i, lim_i``) from ``baseline``'s
    trailing sums: the mean, and 4 sigma where at least 12 readings spread (else null).
    :meth:`_GridLimits.store` computes the same from the hour grid's sums."""
    limits = []
    for i in range(len(METRICS)):
        # a spread within the rounding error of the sum of squares is none (see etl.gold)
        spread = f"(bq_{i} - bs_{i} * bs_{i} / bn_{i})"
        var = (f"(CASE WHEN {spread} <= {VAR_EPS} * bq_{i} THEN 0.0 "
               f"ELSE {spread} / (bn_{i} - 1) END)")
        limits.append(f"bs_{i} / bn_{i} AS mu_{i}, CASE WHEN bn_{i} >= {MIN_BASELINE_READINGS} "
                      f"AND {var} > 0 THEN {OUTLIER_SIGMAS} * sqrt({var}) END AS lim_{i}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE limits AS
        SELECT org_id, compressor_id, hour, {", ".join(limits)} FROM baseline
    """)
    con.execute("DROP TABLE baseline")


def _baseline(con: duckdb.DuckDBPyConnection, lake: Lake, span: tuple[Any, ...],
              partial: str, thresholds: Thresholds, small: bool = False
              ) -> _GridLimits | _JoinedPartials | None:
    """Temp table ``limits`` by the cheaper method for the kept span ``(first hour, last
    hour, compressor-hours, compressors)``; or, on the hour grid, the limits instead. Joined
    to the hot cache (the hourly run), the batch's partials go to gold: the returned
    :class:`_JoinedPartials`."""
    first, last = span[0] - timedelta(hours=24), span[1]
    # once: it checks the lake's marks
    context, hot_rows = _wide_context(con, lake, first, last, thresholds.hot_hours)
    few = span[2] <= thresholds.join_max_hours * span[3]
    # up to two days per compressor (a day's catch-up) the join of wide partials is cheaper
    # than 72 window aggregates; a week per compressor is left to the windows, where the
    # join showed no gain (bench/bench_etl.py, full phase)
    days = span[2] <= 48 * span[3]
    if few or (days and context is not None):
        # gold's hourly run takes its fresh partials on the same grid as the hot cache's
        # (etl.gold), which is when it can use these
        hand = bool(context)
        _baseline_by_join(con, lake, first, last, partial, context, hand=hand,
                          hot_rows=hot_rows, small=small)
        return _JoinedPartials(con, Handoff(lake.root)) if hand else None
    return _baseline_by_window(con, lake, span, partial, thresholds)


def _unabsorbed_silver(lake: Lake, first: datetime, last: datetime, partial: str) -> str | None:
    """Wide hourly partials of silver batches gold has not absorbed yet (a run stopped
    between silver and gold), or None. Their readings belong to the baseline too, or the
    flags would depend on where an earlier run stopped."""
    gold_mark = lake.batch_mark("gold")
    if lake.batch_mark("silver") <= gold_mark:
        return None
    return f"""
        SELECT org_id, compressor_id, {hour_of("ts")} AS hour, {partial}
        FROM (SELECT *, {metric_columns()} FROM delta_scan('{lake.uri("silver")}')
              WHERE date IN ({sql_dates(dates_between(first, last))})
                AND batch_id > {int(gold_mark)}
                AND ts >= '{first.isoformat()}'::TIMESTAMPTZ
                AND ts < '{(last + timedelta(hours=1)).isoformat()}'::TIMESTAMPTZ
                AND compressor_id IN (SELECT DISTINCT compressor_id FROM kept))
        GROUP BY ALL
    """


def _wide_context(con: duckdb.DuckDBPyConnection, lake: Lake, first: datetime,
                  last: datetime, hot_hours: int) -> tuple[str | None, pa.Table | None]:
    """Gold's partials of hours ``first .. last`` as a wide relation (the hot cache) and its
    Arrow rows; ``""`` when gold is still empty (a first load: the batch is its own only
    context); None when neither holds and gold's long rows must be read.

    Summing wide rows joined to each kept hour is cheaper than 72 window aggregates even for
    a week per compressor, so whenever the context is available wide, the join is used."""
    hot = HotPartials(lake.root, hot_hours)
    if not hot.enabled():
        return None, None
    gold_mark = lake.batch_mark("gold")
    if gold_mark == 0:
        return "", None
    meta = hot.usable(gold_mark, first)
    if meta is None:
        return None, None
    rows = hot.table(meta, first, last)
    return hot.register(con, rows), rows


def _baseline_by_join(con: duckdb.DuckDBPyConnection, lake: Lake, first: datetime,
                      last: datetime, partial: str, context: str | None, *,
                      hand: bool = False, hot_rows: pa.Table | None = None,
                      small: bool = False) -> None:
    """Temp table ``limits`` (as :func:`_limits_from_baseline` makes it) by joining each
    kept compressor-hour to its own trailing 24 hourly partials, in long form straight from
    gold. For an hourly batch (one or two hours per compressor) this reads and sums ~25
    partials per kept hour instead of running 72 window aggregates over every context hour
    and pivoting gold's long rows first, which would dominate the hourly run
    (bench/bench_etl.py, hour phase).
    ``context``: :func:`_wide_context`'s answer (gold's partials wide, or None: read gold).
    ``hand``: the partials go to gold (``kept_wide`` also has the minimum and the maximum).
    Every partial is keyed by ``(org_id, compressor_id, hour)``. ``hot_rows``: the context's
    Arrow rows; with them (the hourly run) there is no join:
    :func:`etl.limits.trailing_limits` sums them and ``kept_wide``'s in numpy.
    ``small``: a small batch (:attr:`Thresholds.small_batch_rows`), grouped in numpy."""
    if small:
        values = ", ".join(f"{q(m.name)} AS m_{i}" for i, m in enumerate(METRICS))
        rows = con.execute(f"SELECT org_id, compressor_id, hour, {values} FROM kept")
        table_from_arrow(con, "kept_wide", hourly_partials(rows.to_arrow_table(),
                                                           extremes=hand))
    else:
        kept = partial_aggregates() if hand else partial
        con.execute(f"""CREATE OR REPLACE TEMP TABLE kept_wide AS
                        SELECT org_id, compressor_id, hour, {kept} FROM kept
                        GROUP BY org_id, compressor_id, hour""")
    unabsorbed = _unabsorbed_silver(lake, first, last, partial)
    if unabsorbed is not None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE unabsorbed_wide AS {unabsorbed}")
    sums = ", ".join(f"n_{i}, s_{i}, q_{i}" for i in range(len(METRICS)))
    if context and hot_rows is not None and unabsorbed is None:
        kept_sums = con.execute(f"SELECT org_id, compressor_id, hour, {sums} FROM kept_wide")
        table_from_arrow(con, "limits", trailing_limits(kept_sums.to_arrow_table(), hot_rows))
        return
    if context is not None:
        # gold's partials of these hours are already wide (etl.hot), or there are none
        parts = [f"SELECT org_id, compressor_id, hour, {sums} FROM kept_wide"]
        if context:
            parts.append(f"SELECT org_id, compressor_id, hour, {sums} FROM {context} "
                         f"WHERE compressor_id IN (SELECT compressor_id FROM kept_wide)")
        if unabsorbed is not None:
            parts.append(f"SELECT org_id, compressor_id, hour, {sums} FROM unabsorbed_wide")
        totals = ", ".join(f"sum(p.n_{i}) AS bn_{i}, sum(p.s_{i}) AS bs_{i}, "
                           f"sum(p.q_{i}) AS bq_{i}" for i in range(len(METRICS)))
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE baseline AS
            SELECT k.org_id, k.compressor_id, k.hour, {totals}
            FROM (SELECT DISTINCT org_id, compressor_id, hour FROM kept_wide) k
            JOIN ({" UNION ALL ".join(parts)}) p ON p.compressor_id = k.compressor_id
              AND p.org_id = k.org_id
              AND p.hour >= k.hour - INTERVAL 24 HOURS AND p.hour <= k.hour - INTERVAL 1 HOUR
            GROUP BY k.org_id, k.compressor_id, k.hour
        """)
        _limits_from_baseline(con)
        return
    sources = [unpivot_partials("kept_wide", sums_only=True), f"""
        SELECT org_id, compressor_id, metric, hour, n, sum, sumsq
        FROM delta_scan('{lake.uri("gold")}')
        WHERE date IN ({sql_dates(dates_between(first, last))})
          AND hour >= '{first.isoformat()}'::TIMESTAMPTZ
          AND hour <= '{last.isoformat()}'::TIMESTAMPTZ
          AND compressor_id IN (SELECT compressor_id FROM kept_wide)"""]
    if unabsorbed is not None:
        sources.append(unpivot_partials("unabsorbed_wide", sums_only=True))
    pivot = ", ".join(
        f"sum(bn) FILTER (WHERE metric = '{m.name}') AS bn_{i}, "
        f"sum(bs) FILTER (WHERE metric = '{m.name}') AS bs_{i}, "
        f"sum(bq) FILTER (WHERE metric = '{m.name}') AS bq_{i}" for i, m in enumerate(METRICS))
    # No GROUP BY per (compressor, hour, metric) first: where the batch adds readings to an
    # hour gold already has, both rows fall in the same windows and the sums below add them.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE baseline AS
        WITH b AS (
            SELECT k.org_id, k.compressor_id, k.hour, p.metric, sum(p.n) AS bn,
                   sum(p.sum) AS bs, sum(p.sumsq) AS bq
            FROM (SELECT DISTINCT org_id, compressor_id, hour FROM kept_wide) k
            JOIN ({" UNION ALL ".join(sources)}) p ON p.compressor_id = k.compressor_id
              AND p.org_id = k.org_id
              AND p.hour >= k.hour - INTERVAL 24 HOURS AND p.hour <= k.hour - INTERVAL 1 HOUR
            GROUP BY ALL
        )
        SELECT org_id, compressor_id, hour, {pivot} FROM b GROUP BY ALL
    """)
    _limits_from_baseline(con)


def _baseline_by_window(con: duckdb.DuckDBPyConnection, lake: Lake, span: tuple[Any, ...] | None,
                        partial: str, thresholds: Thresholds) -> _GridLimits | None:
    """Temp table ``limits`` from the trailing 24 h sums per kept compressor-hour, by window
    functions over wide hourly partials (cheapest when most hours are new, as in a first
    load); or, summed on the hour grid (up to :attr:`Thresholds.grid_max_hours`), the
    limits."""
    n_metrics = len(METRICS)
    context = None      # earlier hours' partials (gold, or silver gold has not absorbed)
    if span is not None and span[0] is not None:
        first, last = span[0] - timedelta(hours=24), span[1]
        hot = HotPartials(lake.root, thresholds.hot_hours)
        meta = hot.usable(lake.batch_mark("gold"), first)
        if meta is not None:
            # the same partials, already wide: no pivot of gold's long rows (which would be
            # most of a day's catch-up's silver time)
            sums_cols = ", ".join(f"n_{i}, s_{i}, q_{i}" for i in range(n_metrics))
            context = f"""
                SELECT org_id, compressor_id, hour, {sums_cols}
                FROM {hot.relation(con, meta, first, last)}
                WHERE compressor_id IN (SELECT DISTINCT compressor_id FROM kept)"""
        elif lake.batch_mark("gold") > 0:
            pivot = ", ".join(
                f"sum(n) FILTER (WHERE metric = '{m.name}') AS n_{i}, "
                f"sum(sum) FILTER (WHERE metric = '{m.name}') AS s_{i}, "
                f"sum(sumsq) FILTER (WHERE metric = '{m.name}') AS q_{i}"
                for i, m in enumerate(METRICS))
            context = f"""
                SELECT org_id, compressor_id, hour, {pivot}
                FROM delta_scan('{lake.uri("gold")}')
                WHERE date IN ({sql_dates(dates_between(first, last))})
                  AND hour >= '{first.isoformat()}'::TIMESTAMPTZ
                  AND hour <= '{last.isoformat()}'::TIMESTAMPTZ
                  AND compressor_id IN (SELECT DISTINCT compressor_id FROM kept)
                GROUP BY ALL
            """
        unabsorbed = _unabsorbed_silver(lake, first, last, partial)
        if unabsorbed is not None:
            context = unabsorbed if context is None else \
                f"{context} UNION ALL BY NAME {unabsorbed}"
    # the grid's result lives in Python memory (unlike DuckDB's, which can spill): bounded
    grid = (span is not None and span[0] is not None
            and span[2] <= thresholds.grid_max_hours)
    cell, block = "", ""
    if grid:
        assert span is not None
        # each compressor's hours from 24 before its first kept hour to its last: context
        # outside them reaches no kept hour's baseline and is left out
        size = grid_blocks(con, """
            SELECT org_id, compressor_id, min(hour) - INTERVAL 24 HOURS AS h0, max(hour) AS h1
            FROM kept GROUP BY org_id, compressor_id""")
        cell = f"{cell_sql('h.hour', 'b')} AS pos, "
        block = ("JOIN grid_blocks b USING (org_id, compressor_id) "
                 "WHERE h.hour >= b.h0 AND h.hour <= b.h1")
    # every compressor-hour's sums, ``out`` where the batch has readings (the hours to flag)
    hours = f"SELECT org_id, compressor_id, hour, true AS out, {partial} FROM kept GROUP BY ALL"
    if context is not None:
        # an hour may have partials in both (late readings of an hour gold holds): added.
        # Only then: without context (a first load) this second aggregation of 73 aggregates
        # summing into HUGEINT would be a large share of the statement.
        sums = ", ".join(f"sum(n_{i})::BIGINT AS n_{i}, sum(s_{i}) AS s_{i}, sum(q_{i}) AS q_{i}"
                         for i in range(n_metrics))
        hours = f"""
            SELECT org_id, compressor_id, hour, bool_or(out) AS out, {sums} FROM (
                {hours}
                UNION ALL BY NAME
                SELECT *, false AS out FROM ({context})
            ) GROUP BY org_id, compressor_id, hour"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE hourly AS SELECT {cell}h.* FROM ({hours}) h {block}")
    if grid:
        limits = _GridLimits(size)
        # the batch's hours' sums go to gold (etl.handoff); their minimum and maximum are
        # taken as the readings stream by (_GridLimits.flagged): in this aggregation they
        # would double its time (120 aggregate states per group no longer fit the caches),
        # while 48 ufunc.at passes over the readings on the grid are cheap
        # (bench/bench_etl.py, full phase).
        limits.hand_over(Handoff(lake.root), con.execute(
            f"SELECT {', '.join(SUMS_SCHEMA.names)} FROM hourly "
            "WHERE out").to_arrow_reader(65_536))
        trailing_sums(con, "hourly", size, limits.store)
        con.execute("DROP TABLE hourly")
        return limits
    window = ("OVER (PARTITION BY org_id, compressor_id ORDER BY hour RANGE BETWEEN "
              "INTERVAL 24 HOURS PRECEDING AND INTERVAL 1 HOUR PRECEDING)")
    base = ", ".join(
        f"sum(n_{i}) {window} AS bn_{i}, sum(s_{i}) {window} AS bs_{i}, "
        f"sum(q_{i}) {window} AS bq_{i}" for i in range(n_metrics))
    # Filter after the windows: a WHERE here would run before them and hide the earlier hours
    # that reach the baseline through gold (the hourly case).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE baseline AS
        SELECT * EXCLUDE (out) FROM (SELECT org_id, compressor_id, hour, out, {base} FROM hourly)
        WHERE out
    """)
    con.execute("DROP TABLE hourly")
    _limits_from_baseline(con)
    return None
