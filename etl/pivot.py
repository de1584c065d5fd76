"""Long gold rows to ``agg_compressor_hours`` rows: one per compressor-hour, arrays over metrics.

Gold holds one row per (compressor, metric, hour); PostgreSQL keeps one row per compressor-hour
with each statistic an array in :data:`altaviz.telemetry.METRICS` order (migration 070). The
pivot is a scatter into dense ``(compressor-hours x metrics)`` numpy arrays: one sort of an
integer key per batch, then one fancy-indexed assignment per statistic. The same pivot in DuckDB
(``list()`` per statistic, then ``list_position`` per element) took 3.0-3.4 s for one day of
the 4,500-unit fleet (2.26 M long rows, 108,000 compressor-hours) and could not spill: a week in
one statement ran out of its 1.4 GB.

Rows come out in primary-key order (organization, hour, compressor), so a new hour's rows
append to the index in the hourly run.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.telemetry import METRICS

#: The per-metric statistics, each one array column of ``agg_compressor_hours``.
STATISTICS = ("n", "mean", "min", "max", "stddev", "mean_4h", "min_4h", "max_4h", "stddev_4h",
              "mean_24h", "min_24h", "max_24h", "stddev_24h", "rate_of_change", "outliers",
              "late")
INTEGER_STATISTICS = frozenset({"n", "outliers", "late"})
#: Gold columns the pivot reads.
LONG_COLUMNS = ("org_id", "compressor_id", "metric", "hour", *STATISTICS)
_NAMES = pa.array([m.name for m in METRICS], pa.string())
_US_PER_HOUR = 3_600_000_000
#: Up to this many possible (organization, hour, compressor) keys, compressor-hours are
#: numbered by marking them in a dense array (0.1 s for a day of the fleet) rather than by a
#: sort (0.4 s); beyond it (a long late backfill of a large fleet), by the sort.
DENSE_KEYS = 64_000_000
_TS = pa.timestamp("us", tz="UTC")

SCHEMA = pa.schema([
    pa.field("org_id", pa.string()), pa.field("compressor_id", pa.string()),
    pa.field("hour", _TS),
    *(pa.field(s, pa.list_(pa.int32() if s in INTEGER_STATISTICS else pa.float64()))
      for s in STATISTICS)])


def pivot(long: pa.Table) -> pa.Table:
    """One row per ``(org_id, compressor_id, hour)`` of ``long`` (columns :data:`LONG_COLUMNS`,
    at most one row per metric of each), in primary-key order, each statistic a list
    with one element per metric of :data:`METRICS`, NULL where that metric has no row.

    Raises ValueError naming a metric that :data:`METRICS` does not list (PostgreSQL's arrays
    would have no place for it) or a key that appears twice for the same metric.
    """
    rows = long.num_rows
    if rows == 0:
        return SCHEMA.empty_table()
    k = len(METRICS)
    metric = long.column("metric").combine_chunks()
    pos = pc.fill_null(pc.index_in(metric, value_set=_NAMES), -1).to_numpy()
    if (pos < 0).any():
        bad = metric[int(np.flatnonzero(pos < 0)[0])].as_py()
        raise ValueError(f"gold holds metric {bad!r}, which altaviz.telemetry.METRICS (and "
                         f"PostgreSQL's agg_metric_names()) does not list")
    org = pc.dictionary_encode(long.column("org_id").combine_chunks())
    comp = pc.dictionary_encode(long.column("compressor_id").combine_chunks())
    # codes in sorted order of the values, so keys sort as the primary key does
    org_i = _sorted_codes(org)
    comp_i = _sorted_codes(comp)
    hour_col = pc.cast(long.column("hour").combine_chunks(), _TS)
    hours = pc.cast(hour_col, pa.int64()).to_numpy() // _US_PER_HOUR
    h0 = int(hours.min())
    span = int(hours.max()) - h0 + 1
    grid = len(org.dictionary) * span * len(comp.dictionary)
    key = (org_i * span + (hours - h0)) * len(comp.dictionary) + comp_i
    if grid <= DENSE_KEYS:
        # a counting pass instead of a sort: mark the keys present, number them in key order
        occupied = np.zeros(grid, dtype=bool)
        occupied[key] = True
        number = np.cumsum(occupied, dtype=np.int64) - 1
        group = number[key]
        size = int(number[-1]) + 1
        first = np.empty(size, dtype=np.int64)
        first[group] = np.arange(rows, dtype=np.int64)   # any row of the group names it
        del occupied, number
    else:
        uniq, first, group = np.unique(key, return_index=True, return_inverse=True)
        size = len(uniq)
    cells = group * k + pos
    offsets = pa.array(np.arange(0, size * k + 1, k, dtype=np.int32))
    present = np.zeros(size * k, dtype=bool)
    present[cells] = True
    if int(np.count_nonzero(present)) != rows:
        raise ValueError("gold holds two rows for the same compressor, metric and hour")
    columns: dict[str, pa.Array] = {
        "org_id": long.column("org_id").take(pa.array(first)),
        "compressor_id": long.column("compressor_id").take(pa.array(first)),
        "hour": hour_col.take(pa.array(first)),
    }
    for stat in STATISTICS:
        col = long.column(stat).combine_chunks()
        integer = stat in INTEGER_STATISTICS
        dtype = np.int32 if integer else np.float64
        flat = np.zeros(size * k, dtype=dtype)
        flat[cells] = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(
            dtype, copy=False)
        valid = present.copy()
        if col.null_count:
            valid[cells[col.is_null().to_numpy(zero_copy_only=False)]] = False
        values = pa.array(flat, mask=~valid, type=pa.int32() if integer else pa.float64())
        columns[stat] = pa.ListArray.from_arrays(offsets, values)
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def _sorted_codes(encoded: pa.DictionaryArray) -> np.ndarray:
    """Each element's rank among the distinct values (0 = smallest), as int64."""
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
    return rank[encoded.indices.to_numpy()]
