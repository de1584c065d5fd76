"""Gold: hourly partials and rolling-window features per compressor, metric and hour.

For the silver batches gold has not incorporated (``gold mark < batch <= silver mark``):

1. The *dirty* compressor-hours are the hours those batches added readings to. Their partials
   (n, sum, sum of squares, min, max, outlier and late counts per metric) are recomputed from
   silver: from all of the hour's readings, not by adding to the old partial, so a retry after
   a crash cannot count a reading twice.
2. Every hour whose windows contain a dirty hour (the dirty hour and the 23 after it) gets its
   features recomputed from partials: 1h/4h/24h mean, min, max, sample standard deviation
   (``(sumsq - sum^2/n) / (n - 1)``), rate of change (1h mean minus the previous hour's, per
   hour; null when the previous hour has no readings) and flags. Neighbouring clean hours
   come from gold itself.
3. Rows are compared with gold: changed keys are merged (delta-rs MERGE, a commit without
   the batch mark), then new keys are appended (the commit that records the batch mark);
   identical ones are not written, so a re-run writes nothing. Changed
   and new rows carry the batch id, which is how :mod:`etl.aggregates` finds what to upsert.

Flags: ``outliers`` (some reading in the hour was a 4-sigma outlier), ``late`` (a late
reading), ``incomplete`` (fewer than 6 readings), ``spike`` (the hour's mean moved more than
4 standard deviations of the trailing 24 h from the previous hour's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS, READINGS_PER_HOUR
from etl.carry import MAX_GOLD_ROWS, Carried, Carry
from etl.handoff import REMEDY, Handoff
from etl.hot import HotPartials, Meta
from etl.lake import GOLD_SCHEMA, Lake, conform_reader
from etl.ledger import dates_between, sql_dates
from etl.metrics import (
    VAR_EPS,
    flag_aggregates,
    hour_of,
    metric_columns,
    partial_aggregates,
    unpivot_partials,
    utc_date_of,
)
from etl.models import GoldResult
from etl.thresholds import DEFAULT_THRESHOLDS, Thresholds
from etl.windows import cell_sql, cells_of, gold_batches, grid_blocks, unit_keys

Progress = Callable[[str, float], None]
FEATURES = ("mean", "stddev", "mean_4h", "min_4h", "max_4h", "stddev_4h", "mean_24h",
            "min_24h", "max_24h", "stddev_24h", "rate_of_change")
#: Recomputed values within this relative tolerance count as unchanged (parallel sums may
#: differ in the last bits between runs).
REL_TOL = 1e-9
#: Windows of new hours by the window method are computed on a dense hour grid in numpy
#: (:mod:`etl.windows`), under this share (percent) of the DuckDB memory limit: the grid
#: path keeps little in DuckDB (a bucket's wide partials), but DuckDB holds on to what it
#: freed up to its limit, so a lower limit lowers a bulk load's peak at the same speed
#: (bench/bench_etl.py, full phase). Only there: in the hourly run a lower limit slows gold.
GRID_MEMORY_SHARE = 67
_IN_4H = "WHERE p.hour > o.hour - INTERVAL 4 HOURS"


def _std(n: str, s: str, q: str) -> str:
    """Sample standard deviation from partials. A spread within the rounding error of the sum
    of squares (a constant channel) is 0: otherwise its value would be rounding noise that
    depends on the summation order, and a recomputed window could differ from the stored
    one by that noise alone."""
    return (f"CASE WHEN {n} > 1 THEN CASE WHEN {q} - {s} * {s} / {n} <= {VAR_EPS} * {q} "
            f"THEN 0.0 ELSE sqrt(({q} - {s} * {s} / {n}) / ({n} - 1)) END END")


def gold_features(con: duckdb.DuckDBPyConnection, lake: Lake,
                  progress: Progress | None = None, memory_mb: int | None = None,
                  carry: Carry | None = None, *, bucket_hours: int,
                  thresholds: Thresholds = DEFAULT_THRESHOLDS) -> GoldResult:
    """Recompute the gold rows touched by the silver batches gold still owes; idempotent.

    The work runs per bucket of compressors (``hash(compressor_id) % buckets``: every
    organization's compressor of one id in the same bucket, so a bucket's readings can be
    picked by compressor id alone; about
    ``bucket_hours`` dirty compressor-hours each, ``settings.etl_bucket_hours``; the hourly
    run is one bucket): a compressor's windows never reach another compressor's rows, so
    buckets are independent and each one's partials, windows and comparison fit in memory
    instead of spilling the whole fleet's. When no gold row lies
    in the hours to be recomputed (a first load, the next hour of the hourly run) every
    recomputed row is new: buckets stream straight into one Delta append. Otherwise the
    changed rows are collected and merged, then the new ones appended with the batch mark.

    ``memory_mb`` is the connection's DuckDB memory limit: a bulk load on the hour grid runs
    under :data:`GRID_MEMORY_SHARE` of it, and gives it back at the end.

    ``thresholds``: the sizes at which gold changes method (the join of each output hour to
    its partials, the hot cache's span).

    ``carry``: when every recomputed row is new and there are at most
    :data:`etl.carry.MAX_GOLD_ROWS` of them, a copy of what was written is left in
    ``carry.gold`` for the aggregates stage of the same run (:mod:`etl.carry`).
    """
    lo, hi = lake.batch_mark("gold"), lake.batch_mark("silver")
    if hi <= lo:
        Handoff(lake.root).discard()    # used by a run that stopped before removing it
        return GoldResult()
    silver = lake.uri("silver")
    gold = lake.uri("gold")
    batch_dates = lake.partitions_for_batches("silver", lo, hi)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dirty AS
        SELECT DISTINCT org_id, compressor_id, {hour_of("ts")} AS hour
        FROM delta_scan('{silver}')
        WHERE date IN ({sql_dates(batch_dates)}) AND batch_id > {lo} AND batch_id <= {hi}
    """)
    span = con.execute("SELECT min(hour), max(hour), count(*) FROM dirty").fetchone()
    handoff = Handoff(lake.root)
    if span is None or span[0] is None:
        lake.append("gold", GOLD_SCHEMA.empty_table(), hi)
        HotPartials(lake.root, thresholds.hot_hours).advance(lo, hi)
        handoff.discard()
        return GoldResult(batches=list(range(lo + 1, hi + 1)))
    first, last, n_dirty = span
    buckets = max(1, math.ceil(n_dirty / bucket_hours))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ranges AS
        SELECT org_id, compressor_id, min(hour) AS first_dirty, max(hour) AS last_dirty,
               hash(compressor_id) % {buckets} AS bucket
        FROM dirty GROUP BY org_id, compressor_id
    """)
    # Can any existing gold row be rewritten? Only rows in a compressor's recomputed hours
    # (first dirty .. last dirty + 23 h) can; if there are none, everything is new.
    out_last = last + timedelta(hours=23)
    existing = con.execute(f"""
        SELECT count(*) FROM delta_scan('{gold}') g
        JOIN ranges r ON g.compressor_id = r.compressor_id AND g.org_id = r.org_id
          AND g.hour >= r.first_dirty AND g.hour <= r.last_dirty + INTERVAL 23 HOURS
        WHERE g.date IN ({sql_dates(dates_between(first, out_last))})
          AND g.hour >= '{first.isoformat()}'::TIMESTAMPTZ
          AND g.hour <= '{out_last.isoformat()}'::TIMESTAMPTZ
    """).fetchone()
    fresh_only = not existing or existing[0] == 0
    n_comp = con.execute("SELECT count(*) FROM ranges").fetchone()
    out_hours = n_dirty + (existing[0] if existing else 0) / len(METRICS)
    join_max = thresholds.join_max_hours * (n_comp[0] if n_comp else 1)
    method = "join" if out_hours <= join_max else "window"
    hot = HotPartials(lake.root, thresholds.hot_hours)
    ctx_first = first - timedelta(hours=23)
    meta = hot.usable(lo, ctx_first) if method == "join" and fresh_only else None
    ctx = _Context(con, silver, gold, hi, first, last, buckets, method,
                   (hot, meta) if meta else None, every_hour_dirty=lo == 0)
    hot_update = hot.start(lo, last)
    cols = ", ".join(f.name for f in GOLD_SCHEMA)
    if fresh_only:
        counted = [0]
        kept: list[pa.RecordBatch] | None = [] if carry is not None else None
        # a bulk load, or new hours whose context the hot cache holds (the hourly run)
        bulk = method == "window"
        grid = bulk or ctx.hot is not None
        # silver's partials of exactly these batches, and no gold row in their hours: they
        # are the hours' complete partials (etl.handoff), and silver need not be read again
        handed = handoff if grid and handoff.usable(lo, hi) else None
        if bulk and memory_mb:
            con.execute(f"SET memory_limit = '{memory_mb * GRID_MEMORY_SHARE // 100}MB'")

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal kept
            for b in range(buckets):
                if grid:
                    rows = gold_batches(con, *ctx.grid_partials(b, handed), hi)
                else:
                    ctx.recompute(b, table=False)
                    rows = conform_reader(
                        con.execute(f"SELECT {cols} FROM recomputed").to_arrow_reader(250_000),
                        GOLD_SCHEMA)
                for batch in rows:
                    counted[0] += batch.num_rows
                    if kept is not None:
                        kept.append(batch)
                        if counted[0] > MAX_GOLD_ROWS:
                            kept = None
                    yield batch
                hot_update.stage(con, ctx.fresh)
                if progress:
                    progress("gold", 0.9 * (b + 1) / buckets)

        try:
            lake.append("gold", pa.RecordBatchReader.from_batches(GOLD_SCHEMA, batches()), hi)
        finally:
            if bulk and memory_mb:
                con.execute(f"SET memory_limit = '{memory_mb}MB'")
        hot_update.finish(con, lake, hi)
        handoff.discard()
        if carry is not None and kept is not None:
            # all of these compressor-hours' rows: no gold row lay in their hours before
            carry.gold = Carried(lake.root, lo, hi,
                                 pa.Table.from_batches(kept, schema=GOLD_SCHEMA))
        if progress:
            progress("gold", 1.0)
        return GoldResult(batches=list(range(lo + 1, hi + 1)), rows_written=counted[0])

    # compare with gold: write only new or changed rows
    def differs(c: str) -> str:
        return (f"(r.{c} IS DISTINCT FROM o.{c} AND NOT coalesce("
                f"abs(r.{c} - o.{c}) <= {REL_TOL} * greatest(1, abs(o.{c})), false))")
    change = " OR ".join(
        [differs(c) for c in ("sum", "sumsq", *FEATURES)]
        + [f"r.{c} IS DISTINCT FROM o.{c}" for c in
           ("n", "min", "max", "outliers", "late", "flags")])
    parts: list[pa.Table] = []
    written = total = 0
    for b in range(buckets):
        ctx.recompute(b, table=True)
        # the full rows of the recomputed hours, for the comparison
        con.execute("""
            CREATE OR REPLACE TEMP TABLE old AS
            SELECT g.* FROM gold_ctx g
            JOIN ranges_b r ON g.compressor_id = r.compressor_id AND g.org_id = r.org_id
              AND g.hour >= r.first_dirty AND g.hour <= r.last_dirty + INTERVAL 23 HOURS
        """)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE to_write AS
            SELECT r.*, o.n IS NOT NULL AS existed
            FROM recomputed r LEFT JOIN old o ON r.compressor_id = o.compressor_id
                AND r.org_id = o.org_id
                AND r.metric = o.metric AND r.hour = o.hour
            WHERE o.n IS NULL OR {change}
        """)
        w, e, t = con.execute(
            "SELECT (SELECT count(*) FROM to_write), "
            "(SELECT count(*) FROM to_write WHERE existed), "
            "(SELECT count(*) FROM recomputed)").fetchone() or (0, 0, 0)
        written, total = written + w, total + t
        if e:
            reader = con.execute(f"SELECT {cols} FROM to_write WHERE existed"
                                 ).to_arrow_reader(250_000)
            parts.append(conform_reader(reader, GOLD_SCHEMA).read_all())
        # new keys wait in DuckDB (which can spill) for one streamed append
        con.execute(f"{'INSERT INTO gold_new' if b else 'CREATE OR REPLACE TEMP TABLE gold_new AS'}"
                    f" SELECT {cols} FROM to_write WHERE NOT existed")
        hot_update.stage(con, "fresh_wide")
        if progress:
            progress("gold", 0.9 * (b + 1) / buckets)
    if parts:
        # Rows that changed are merged first, without the batch mark; the new rows are then
        # appended with it. A crash in between leaves the mark behind: the retry finds the
        # merged rows unchanged and appends the new ones, so nothing is lost or doubled. The
        # MERGE's source is only the changed rows (a late batch's few hours and their
        # windows), not the day of new rows that came with them, which would multiply the
        # MERGE's memory.
        data = pa.concat_tables(parts)
        # The touched dates as literals: with only ``t.date = s.date`` delta-rs (1.6.6) scans
        # every gold file for the join, so the MERGE's memory and time would grow with the
        # lake's history (delta-io/delta-rs#3786).
        touched = sql_dates({str(d) for d in pc.unique(data.column("date")).to_pylist()})
        (lake.table("gold").merge(
            source=data, source_alias="s", target_alias="t",
            predicate=(f"t.date IN ({touched}) AND t.date = s.date "
                       "AND t.org_id = s.org_id AND t.compressor_id = s.compressor_id "
                       "AND t.metric = s.metric AND t.hour = s.hour"))
         .when_matched_update_all().when_not_matched_insert_all().execute())
        del data, parts
    reader = con.execute(f"SELECT {cols} FROM gold_new").to_arrow_reader(250_000)
    lake.append("gold", conform_reader(reader, GOLD_SCHEMA), hi)
    con.execute("DROP TABLE gold_new")
    hot_update.finish(con, lake, hi)
    handoff.discard()
    if progress:
        progress("gold", 1.0)
    return GoldResult(batches=list(range(lo + 1, hi + 1)), rows_written=int(written),
                      rows_unchanged=int(total - written))


class _Context:
    """The queries of one bucket of compressors: fresh partials, neighbouring partials from
    gold, and the windows over both (temp table or view ``recomputed``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, silver: str, gold: str, hi: int,
                 first: datetime, last: datetime, buckets: int, method: str = "window",
                 hot: tuple[HotPartials, Meta] | None = None, *,
                 every_hour_dirty: bool = False) -> None:
        self.con, self.silver, self.gold, self.hi = con, silver, gold, hi
        #: gold has absorbed no batch yet: every silver reading lies in a dirty hour, and
        #: the readings need no check against ``dirty_b`` (a first load: the semi-join is
        #: skipped in every bucket)
        self.every_hour_dirty = every_hour_dirty
        self._flags_counted = False
        self.method = method
        #: the hot partials, when valid and covering the context (etl.hot)
        self.hot = hot
        self.first, self.last, self.buckets = first, last, buckets
        #: the bucket's fresh partials: DuckDB table ``fresh_wide``, or the handed ones
        self.fresh: str | pa.Table = "fresh_wide"

    def _hot_context(self, hot: HotPartials, meta: Meta, size: int) -> pa.Table:
        """The cached partials of the hours the bucket's windows reach, as
        :func:`etl.windows.gold_batches` takes context rows: each row's grid cell (``pos``),
        ``out`` false, zero outlier and late counts (they only matter for output rows). Hours
        being recomputed (``dirty_b``) and rows outside their compressor's block go to cell
        ``size``, one past a grid of ``size`` cells."""
        rows = hot.table(meta, self.first - timedelta(hours=23), self.last)
        pos = cells_of(self.con, rows, size, exclude="dirty_b")
        zeros = pa.array(np.zeros(rows.num_rows, dtype=np.int64))
        out = rows.append_column("pos", pa.array(pos, pa.int64())).append_column(
            "out", pa.array(np.zeros(rows.num_rows, dtype=bool)))
        for i in range(len(METRICS)):
            out = out.append_column(f"o_{i}", zeros).append_column(f"l_{i}", zeros)
        return out

    def grid_partials(self, bucket: int, handed: Handoff | None = None
                      ) -> tuple[list[str | pa.Table], int]:
        """The bucket's wide partials for :func:`etl.windows.gold_batches`: the tables (the
        fresh partials, marked ``out``, and, pivoted from gold, the neighbouring hours their
        windows reach) and the grid's size. ``handed``: silver's partials and flag counts
        (:mod:`etl.handoff`), which are then the fresh partials."""
        size = self._inputs(bucket, table=False, grid=True, handed=handed is not None)
        con = self.con
        self.fresh = "fresh_wide" if handed is None else self._handed(handed, size)
        tables: list[str | pa.Table] = [self.fresh]
        if self.hot is not None:
            # the hourly run: the context is already wide in the cache, and stays in Arrow
            # (materializing it in DuckDB would be a large share of the hourly run's gold)
            tables.append(self._hot_context(*self.hot, size))
            return tables, size + 1
        has_ctx = con.execute("SELECT EXISTS (SELECT 1 FROM gold_ctx)").fetchone()
        if has_ctx and has_ctx[0]:
            pivot = ", ".join(
                f"coalesce(sum(n) FILTER (WHERE metric = '{m.name}'), 0)::BIGINT AS n_{i}, "
                f"sum(sum) FILTER (WHERE metric = '{m.name}') AS s_{i}, "
                f"sum(sumsq) FILTER (WHERE metric = '{m.name}') AS q_{i}, "
                f"min(min) FILTER (WHERE metric = '{m.name}') AS lo_{i}, "
                f"max(max) FILTER (WHERE metric = '{m.name}') AS hi_{i}, "
                f"0::BIGINT AS o_{i}, 0::BIGINT AS l_{i}"
                for i, m in enumerate(METRICS))
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE ctx_wide AS
                SELECT {cell_sql("c.hour", "b")} AS pos, false AS out, c.*
                FROM (SELECT org_id, compressor_id, hour, {pivot}
                      FROM gold_ctx ANTI JOIN dirty_b USING (org_id, compressor_id, hour)
                      GROUP BY ALL) c
                JOIN grid_blocks b USING (org_id, compressor_id)""")
            tables.append("ctx_wide")
        return tables, size

    def _handed(self, handoff: Handoff, size: int) -> pa.Table:
        """The bucket's rows of silver's handed partials as the fresh partials: each row's
        cell (``pos``), ``out`` true, and the outlier and late counts (zero where the flag
        counts have no row)."""
        units = unit_keys(self.con.execute("SELECT org_id, compressor_id FROM ranges_b")
                          .to_arrow_table())
        rows = handoff.partials(units)
        pos = cells_of(self.con, rows, size)
        flags = handoff.flags()
        flagged = flags.filter(pc.is_in(unit_keys(flags), value_set=units))
        row_at = np.full(size + 1, -1, dtype=np.int64)
        row_at[pos] = np.arange(len(pos))
        at = row_at[cells_of(self.con, flagged, size)]
        dirty = self.con.execute("SELECT count(*) FROM dirty_b").fetchone()
        if (pos == size).any() or (at < 0).any() or dirty is None or dirty[0] != len(pos):
            # the grid is laid out from silver's batch hours (``dirty_b``), which are exactly
            # the handed rows' hours: never expected, and no hour may go missing
            raise RuntimeError("handed partials do not match the silver batches' hours "
                               f"(lake {self.silver}); {REMEDY}")
        out = rows.append_column("pos", pa.array(pos, pa.int64())).append_column(
            "out", pa.array(np.ones(len(pos), dtype=bool)))
        for i in range(len(METRICS)):
            for p in ("o", "l"):
                counts = np.zeros(len(pos), dtype=np.int64)
                counts[at] = flagged.column(f"{p}_{i}").to_numpy()
                out = out.append_column(f"{p}_{i}", pa.array(counts))
        return out

    def _readings(self, ranges: str, dirty: str, where: str = "") -> str:
        """Silver's readings (with ``hour`` and the metric columns) of the compressors in
        table ``ranges`` in the hours of table ``dirty`` (``where``: a further condition).
        Picked by compressor id, then by ``dirty``'s ``(org_id, compressor_id, hour)``; when
        every hour is dirty, every organization's compressor of a picked id is in the same
        bucket (:func:`gold_features`), so the id alone picks exactly the bucket's."""
        first, last = self.first, self.last
        return f"""(SELECT s.*, {hour_of("s.ts")} AS hour, {metric_columns()}
              FROM delta_scan('{self.silver}') s
              WHERE s.date IN ({sql_dates(dates_between(first, last))})
                AND s.ts >= '{first.isoformat()}'::TIMESTAMPTZ
                AND s.ts < '{(last + timedelta(hours=1)).isoformat()}'::TIMESTAMPTZ
                AND s.compressor_id IN (SELECT compressor_id FROM {ranges}) {where})
        {"" if self.every_hour_dirty
         else f"SEMI JOIN {dirty} USING (org_id, compressor_id, hour)"}"""

    def _flag_counts(self) -> None:
        """Temp table ``flag_counts``: the outlier and late counts of every dirty
        compressor-hour with a flagged reading, for all buckets at once: counted per bucket,
        each count would read silver's flags again, at nearly the same cost whatever the
        number of compressors."""
        if self._flags_counted:
            return
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE flag_counts AS
            SELECT org_id, compressor_id, hour, {flag_aggregates()}
            FROM {self._readings("ranges", "dirty",
                                 "AND (s.late OR len(s.outlier_metrics) > 0)")}
            GROUP BY ALL
        """)
        self._flags_counted = True

    def _inputs(self, bucket: int, *, table: bool, grid: bool = False,
                handed: bool = False) -> int:
        """Temp tables ``ranges_b``, ``dirty_b``, ``fresh_wide`` and relation ``gold_ctx``;
        with ``grid``, also the bucket's hour grid (:func:`etl.windows.grid_blocks`, covering
        each compressor's dirty hours and the 23 before them) and each fresh row's cell
        in it (``pos``, and ``out`` = true). Returns the grid's size (0 without ``grid``).
        With ``handed`` (silver's partials take its place) no ``fresh_wide``."""
        con, first, last = self.con, self.first, self.last
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE ranges_b AS
            SELECT org_id, compressor_id, first_dirty, last_dirty FROM ranges
            WHERE bucket = {bucket}
        """)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE dirty_b AS
            SELECT d.* FROM dirty d SEMI JOIN ranges_b USING (org_id, compressor_id)
        """)
        # 1. fresh partials of the dirty hours, from every silver reading of those hours;
        # outlier and late counts from the flagged readings alone (see flag_aggregates)
        if not handed:
            self._flag_counts()
        flag_counts = ", ".join(f"coalesce(f.o_{i}, 0) AS o_{i}, coalesce(f.l_{i}, 0) AS l_{i}"
                                for i in range(len(METRICS)))
        cell, block, size = "", "", 0
        if grid:
            # only new hours are written on the grid (no gold row lies in the 23 h after
            # them), so their windows need the 23 h before and no hour after
            size = grid_blocks(con, "SELECT org_id, compressor_id, "
                               "first_dirty - INTERVAL 23 HOURS AS h0, "
                             "last_dirty AS h1 FROM ranges_b")
            cell = f"{cell_sql('p.hour', 'b')} AS pos, true AS out, "
            block = "JOIN grid_blocks b USING (org_id, compressor_id)"
        if not handed:
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE fresh_wide AS
                SELECT {cell}p.*, {flag_counts}
                FROM (SELECT org_id, compressor_id, hour, {partial_aggregates()}
                      FROM {self._readings("ranges_b", "dirty_b")} GROUP BY ALL) p
                LEFT JOIN flag_counts f USING (org_id, compressor_id, hour)
                {block}
            """)
        # 2. neighbouring partials from gold (23 h either side), only the partial columns
        # (when comparing, every column of the context is read once: the comparison needs
        # the full rows of the recomputed hours, which lie inside it)
        ctx_first, ctx_last = first - timedelta(hours=23), last + timedelta(hours=23)
        join_fresh = self.method == "join" and not table
        read = ("g.*" if table else "g.org_id, g.compressor_id, g.metric, g.hour, g.n, g.sum, "
                "g.sumsq, g.min, g.max, g.outliers, g.late")
        # The join method on new hours streams the context straight from gold into the join (a
        # view, filtered only by the batch's hour span): materializing millions of long rows
        # with their text keys would be the largest cost of the hourly run. The per-compressor
        # ranges only shrink the context; the join's own window condition is exact.
        ranged = ("AND g.compressor_id IN (SELECT compressor_id FROM ranges_b)" if join_fresh
                  else "")
        join_ranges = "" if join_fresh else """
            JOIN ranges_b r ON g.compressor_id = r.compressor_id AND g.org_id = r.org_id
              AND g.hour >= r.first_dirty - INTERVAL 23 HOURS
              AND g.hour <= r.last_dirty + INTERVAL 23 HOURS"""
        con.execute(f"""
            CREATE OR REPLACE TEMP {"VIEW" if join_fresh else "TABLE"} gold_ctx AS
            SELECT {read}
            FROM delta_scan('{self.gold}') g{join_ranges}
            WHERE g.date IN ({sql_dates(dates_between(ctx_first, ctx_last))})
              AND g.hour >= '{ctx_first.isoformat()}'::TIMESTAMPTZ
              AND g.hour <= '{ctx_last.isoformat()}'::TIMESTAMPTZ {ranged}
        """)
        return size

    def recompute(self, bucket: int, *, table: bool) -> None:
        """Temp table or view ``recomputed``: the gold rows of the bucket's recomputed hours."""
        self._inputs(bucket, table=table)
        con = self.con
        partials = f"""
                {unpivot_partials('fresh_wide')}
                UNION ALL
                SELECT org_id, compressor_id, metric, hour, n, sum, sumsq, min, max, outliers,
                       late
                FROM gold_ctx o ANTI JOIN dirty_b d USING (org_id, compressor_id, hour)"""
        if self.method == "join":
            # Few output hours per compressor (the hourly run): aggregate each output row's
            # own 24 h of partials. Window functions would compute every context row's
            # windows too, which would be most of the hourly run's time.
            con.execute(f"CREATE OR REPLACE TEMP VIEW partials_b AS {partials}")
            # the output rows: a new hour's are exactly its fresh partials (no gold row lies
            # in the recomputed hours); otherwise every partial in the compressor's range
            outputs = unpivot_partials("fresh_wide") if not table else """
                SELECT p.* FROM partials_b p JOIN ranges_b r ON p.compressor_id = r.compressor_id
                  AND p.org_id = r.org_id
                  AND p.hour >= r.first_dirty AND p.hour <= r.last_dirty + INTERVAL 23 HOURS"""
            con.execute(f"CREATE OR REPLACE TEMP TABLE out_b AS {outputs}")
            win = f"""
                SELECT o.org_id, o.compressor_id, o.metric, o.hour,
                    any_value(o.n) AS n, any_value(o.sum) AS sum,
                    any_value(o.sumsq) AS sumsq, any_value(o.min) AS min,
                    any_value(o.max) AS max, any_value(o.outliers) AS outliers,
                    any_value(o.late) AS late,
                    sum(p.n) FILTER ({_IN_4H}) AS n4, sum(p.sum) FILTER ({_IN_4H}) AS s4,
                    sum(p.sumsq) FILTER ({_IN_4H}) AS q4,
                    min(p.min) FILTER ({_IN_4H}) AS min_4h,
                    max(p.max) FILTER ({_IN_4H}) AS max_4h,
                    sum(p.n) AS n24, sum(p.sum) AS s24, sum(p.sumsq) AS q24,
                    min(p.min) AS min_24h, max(p.max) AS max_24h,
                    max(p.hour) FILTER (WHERE p.hour < o.hour) AS prev_hour,
                    any_value(p.sum / p.n) FILTER (WHERE p.hour = o.hour - INTERVAL 1 HOUR)
                        AS prev_mean
                FROM out_b o
                JOIN partials_b p ON p.compressor_id = o.compressor_id AND p.metric = o.metric
                  AND p.org_id = o.org_id
                  AND p.hour > o.hour - INTERVAL 24 HOURS AND p.hour <= o.hour
                GROUP BY o.org_id, o.compressor_id, o.metric, o.hour"""
        else:
            w4 = ("OVER (PARTITION BY org_id, compressor_id, metric ORDER BY hour "
                  "RANGE BETWEEN INTERVAL 3 HOURS PRECEDING AND CURRENT ROW)")
            w24 = ("OVER (PARTITION BY org_id, compressor_id, metric ORDER BY hour "
                   "RANGE BETWEEN INTERVAL 23 HOURS PRECEDING AND CURRENT ROW)")
            win = f"""
                SELECT *,
                    sum(n) {w4} AS n4, sum(sum) {w4} AS s4, sum(sumsq) {w4} AS q4,
                    min(min) {w4} AS min_4h, max(max) {w4} AS max_4h,
                    sum(n) {w24} AS n24, sum(sum) {w24} AS s24, sum(sumsq) {w24} AS q24,
                    min(min) {w24} AS min_24h, max(max) {w24} AS max_24h,
                    lag(hour) OVER (PARTITION BY org_id, compressor_id, metric ORDER BY hour)
                        AS prev_hour,
                    lag(sum / n) OVER (PARTITION BY org_id, compressor_id, metric ORDER BY hour)
                        AS prev_mean
                FROM ({partials})"""
        kind = "TABLE" if table else "VIEW"
        con.execute(f"""
            CREATE OR REPLACE TEMP {kind} recomputed AS
            WITH win AS ({win}
            ), feat AS (
                SELECT *, sum / n AS mean, {_std("n", "sum", "sumsq")} AS stddev,
                    s4 / n4 AS mean_4h, {_std("n4", "s4", "q4")} AS stddev_4h,
                    s24 / n24 AS mean_24h, {_std("n24", "s24", "q24")} AS stddev_24h,
                    CASE WHEN prev_hour = hour - INTERVAL 1 HOUR THEN sum / n - prev_mean END
                        AS rate_of_change
                FROM win
            )
            SELECT f.*,
                list_filter([
                    CASE WHEN outliers > 0 THEN 'outliers' END,
                    CASE WHEN late > 0 THEN 'late' END,
                    CASE WHEN n < {READINGS_PER_HOUR} THEN 'incomplete' END,
                    CASE WHEN abs(rate_of_change) > 4 * stddev_24h THEN 'spike' END
                ], x -> x IS NOT NULL) AS flags,
                {self.hi}::BIGINT AS batch_id, {utc_date_of("hour")} AS date
            FROM feat f JOIN ranges_b r ON f.compressor_id = r.compressor_id
              AND f.org_id = r.org_id
              AND f.hour >= r.first_dirty AND f.hour <= r.last_dirty + INTERVAL 23 HOURS
        """)
