"""Long gold rows to ``agg_compressor_hours`` rows: one per compressor-hour, arrays over metrics.

Gold holds one row per (compressor, metric, hour); PostgreSQL keeps one row per compressor-hour
with each statistic an array in :data:`altaviz.core.telemetry.METRICS` order (migration 070). The
pivot is a scatter into dense ``(compressor-hours x metrics)`` numpy arrays: one sort of an
integer key per batch, then one fancy-indexed assignment per statistic. The same pivot in DuckDB
(``list()`` per statistic, then ``list_position`` per element) is slower and cannot spill: a
week in one statement runs out of memory (bench/bench_etl.py, full phase, times the
aggregates stage).

Rows come out in primary-key order (organization, hour, compressor). :mod:`etl.pgcopy` sends
them grouped by their encoded length, each group in this order: a new hour's rows still land at
the right edge of the index in the hourly run, and a month's load builds its key by one sort.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS

#: The per-metric statistics, each one array column of ``agg_compressor_hours``.
STATISTICS = ("n", "mean", "min", "max", "stddev", "mean_4h", "min_4h", "max_4h", "stddev_4h",
              "mean_24h", "min_24h", "max_24h", "stddev_24h", "rate_of_change", "outliers",
              "late")
INTEGER_STATISTICS = frozenset({"n", "outliers", "late"})
#: Gold columns the pivot reads.
LONG_COLUMNS = ("org_id", "compressor_id", "metric", "hour", *STATISTICS)
#: The metrics' names in :data:`METRICS` order: a metric's position in the arrays.
METRIC_NAMES = pa.array([m.name for m in METRICS], pa.string())
_US_PER_HOUR = 3_600_000_000
#: Up to this many possible (organization, hour, compressor) keys, compressor-hours are
#: numbered by marking them in a dense array, several times cheaper than a sort; beyond it (a
#: long late backfill of a large fleet, whose dense array would be too large), by the sort.
DENSE_KEYS = 64_000_000
_TS = pa.timestamp("us", tz="UTC")

SCHEMA = pa.schema([
    pa.field("org_id", pa.string()), pa.field("compressor_id", pa.string()),
    pa.field("hour", _TS),
    *(pa.field(s, pa.list_(pa.int32() if s in INTEGER_STATISTICS else pa.float64()))
      for s in STATISTICS)])


def pivot(long: pa.Table, *, dense_keys: int = DENSE_KEYS) -> pa.Table:
    """One row per ``(org_id, compressor_id, hour)`` of ``long`` (columns :data:`LONG_COLUMNS`,
    at most one row per metric of each), in primary-key order, each statistic a list
    with one element per metric of :data:`METRICS`, NULL where that metric has no row.

    Raises ValueError naming a metric that :data:`METRICS` does not list (PostgreSQL's arrays
    would have no place for it) or a key that appears twice for the same metric.
    ``dense_keys``: see :func:`pivot_dense`.
    """
    if long.num_rows == 0:
        return SCHEMA.empty_table()
    return to_arrow(pivot_long(long, dense_keys=dense_keys))


def pivot_long(long: pa.Table, *, dense_keys: int = DENSE_KEYS) -> Pivoted:
    """:func:`pivot` as dense arrays (:class:`Pivoted`)."""
    metric = long.column("metric").combine_chunks()
    org = pc.dictionary_encode(long.column("org_id").combine_chunks())
    comp = pc.dictionary_encode(long.column("compressor_id").combine_chunks())
    hour = pc.cast(pc.cast(long.column("hour").combine_chunks(), _TS), pa.int64())
    codes = pa.table({
        "org": pa.array(_sorted_codes(org)), "comp": pa.array(_sorted_codes(comp)),
        "hour": pc.divide(hour, _US_PER_HOUR),
        "pos": pc.index_in(metric, value_set=METRIC_NAMES),
        **{s: long.column(s) for s in STATISTICS}})
    return pivot_dense(codes, org.dictionary.sort(), comp.dictionary.sort(),
                       unknown=lambda i: metric[i].as_py(), dense_keys=dense_keys)


@dataclass(frozen=True)
class Pivoted:
    """Compressor-hours pivoted into dense numpy arrays, rows in primary-key order.

    Row ``r`` is organization ``orgs[org[r]]``, compressor ``compressors[comp[r]]``, hour
    ``hour[r]`` (hours since the epoch); ``values[stat][r, i]`` is metric ``i`` of
    :data:`METRICS`, meaningful where ``valid[stat][r, i]`` (a stat without NULLs shares the
    array of present metrics). :func:`to_arrow` gives the Arrow form, :mod:`etl.pgcopy`
    encodes it for PostgreSQL's binary COPY without it.
    """

    orgs: pa.Array
    compressors: pa.Array
    org: np.ndarray
    comp: np.ndarray
    hour: np.ndarray
    values: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.hour)

    def select(self, rows: slice | np.ndarray) -> Pivoted:
        """The rows a slice (views) or an index array (copies) picks; statistics that shared
        a validity array still share one."""
        valid: dict[int, np.ndarray] = {}
        for v in self.valid.values():
            if id(v) not in valid:
                valid[id(v)] = v[rows]
        return Pivoted(self.orgs, self.compressors, self.org[rows], self.comp[rows],
                       self.hour[rows], {s: v[rows] for s, v in self.values.items()},
                       {s: valid[id(v)] for s, v in self.valid.items()})


def to_arrow(p: Pivoted) -> pa.Table:
    """The :data:`SCHEMA` table of ``p``: each statistic a list over :data:`METRICS`."""
    if p.rows == 0:
        return SCHEMA.empty_table()
    k = len(METRICS)
    offsets = pa.array(np.arange(0, p.rows * k + 1, k, dtype=np.int32))
    columns: dict[str, pa.Array] = {
        "org_id": p.orgs.take(pa.array(p.org)),
        "compressor_id": p.compressors.take(pa.array(p.comp)),
        "hour": pa.array(p.hour * _US_PER_HOUR, pa.int64()).cast(_TS),
    }
    for stat in STATISTICS:
        integer = stat in INTEGER_STATISTICS
        values = pa.array(p.values[stat].reshape(-1), mask=~p.valid[stat].reshape(-1),
                          type=pa.int32() if integer else pa.float64())
        columns[stat] = pa.ListArray.from_arrays(offsets, values)
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def pivot_dense(codes: pa.Table, orgs: pa.Array, compressors: pa.Array,
                unknown: Callable[[int], object] | None = None, *,
                dense_keys: int = DENSE_KEYS) -> Pivoted:
    """Pivot rows already coded as integers, which DuckDB computes far cheaper than Arrow
    strings cross into Python: ``org`` and ``comp`` (positions in the sorted arrays ``orgs``
    and ``compressors``), ``hour`` (hours since the epoch), ``pos`` (the metric's 0-based
    position in :data:`METRICS`, NULL for a metric it does not list), and
    :data:`STATISTICS`. ``unknown(row)`` names the metric of a row with no position.
    Compressor-hours are numbered by marking them in a dense array when there are at most
    ``dense_keys`` possible keys, else by a sort (the same numbers).

    Raises ValueError for a metric :data:`METRICS` does not list, a row without a code, or
    two rows for the same compressor, metric and hour.
    """
    k = len(METRICS)
    rows = codes.num_rows
    if rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pivoted(orgs, compressors, empty, empty, empty,
                       {s: np.zeros((0, k), dtype=_dtype(s)) for s in STATISTICS},
                       {s: np.zeros((0, k), dtype=bool) for s in STATISTICS})
    pos = pc.fill_null(codes.column("pos").combine_chunks(), -1).to_numpy().astype(np.int64)
    if (pos < 0).any():
        i = int(np.flatnonzero(pos < 0)[0])
        bad = unknown(i) if unknown else "?"
        raise ValueError(f"gold holds metric {bad!r}, which altaviz.core.telemetry.METRICS (and "
                         f"PostgreSQL's agg_metric_names()) does not list")
    for name in ("org", "comp", "hour"):
        if codes.column(name).null_count:
            raise ValueError(f"pivot: a row without its {name} code")
    org_i = codes.column("org").combine_chunks().to_numpy().astype(np.int64)
    comp_i = codes.column("comp").combine_chunks().to_numpy().astype(np.int64)
    hours = codes.column("hour").combine_chunks().to_numpy().astype(np.int64)
    h0 = int(hours.min())
    span = int(hours.max()) - h0 + 1
    n_comp = len(compressors)
    grid = len(orgs) * span * n_comp
    key = (org_i * span + (hours - h0)) * n_comp + comp_i
    if grid <= dense_keys:
        # a counting pass instead of a sort: mark the keys present, number them in key order
        occupied = np.zeros(grid, dtype=bool)
        occupied[key] = True
        keys = np.flatnonzero(occupied)
        number = np.cumsum(occupied, dtype=np.int64) - 1
        group = number[key]
        del occupied, number
    else:
        keys, group = np.unique(key, return_inverse=True)
    size = len(keys)
    # Values are scattered metric-major (``pos * size + group``), then transposed into the
    # arrays' order (``group * k + pos``). Gold's rows come a metric at a time in key order,
    # so metric-major cells are written nearly in sequence; written straight in the arrays'
    # order, every value landed on another cache line (a day of the fleet: 2.26 M values a
    # statistic, ~25 ns each against ~5 with the transpose).
    cells = pos * size + group
    present_mm = np.zeros(size * k, dtype=bool)
    present_mm[cells] = True
    if int(np.count_nonzero(present_mm)) != rows:
        raise ValueError("gold holds two rows for the same compressor, metric and hour")
    present = _transposed(present_mm, k, size)
    org_of, rest = np.divmod(keys, span * n_comp)
    hour_of, comp_of = np.divmod(rest, n_comp)
    values: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for stat in STATISTICS:
        col = codes.column(stat).combine_chunks()
        dtype = _dtype(stat)
        flat = np.zeros(size * k, dtype=dtype)
        flat[cells] = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(
            dtype, copy=False)
        values[stat] = _transposed(flat, k, size)
        valid[stat] = present
        if col.null_count:
            valid_mm = present_mm.copy()
            valid_mm[cells[col.is_null().to_numpy(zero_copy_only=False)]] = False
            valid[stat] = _transposed(valid_mm, k, size)
    return Pivoted(orgs, compressors, org_of, comp_of, hour_of + h0, values, valid)


def _dtype(stat: str) -> type[np.number[Any]]:
    return np.int32 if stat in INTEGER_STATISTICS else np.float64


def _transposed(metric_major: np.ndarray, k: int, size: int) -> np.ndarray:
    """``k`` runs of ``size`` values (one per metric) as ``size`` rows of ``k``."""
    return np.ascontiguousarray(metric_major.reshape(k, size).T)


def _sorted_codes(encoded: pa.DictionaryArray) -> np.ndarray:
    """Each element's rank among the distinct values (0 = smallest), as int64."""
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
    return rank[encoded.indices.to_numpy()]
