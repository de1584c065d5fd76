"""Silver's outlier limits of an hourly batch, summed in numpy from the hot partials.

Why this exists: the hourly run flags each new reading against its compressor's trailing 24
hours (hours ``h - 24 .. h - 1``). Those hours' partials are already wide in memory (the hot
cache, :mod:`etl.hot`, ~100,000 rows for 4,500 compressors), and the batch's own hours are in
``kept_wide``. A DuckDB join of each kept hour to its 24 partials, a sum of 72 columns and a
second statement for the limits would be a large share of the hourly run's silver
(bench/bench_etl.py, hour phase); here each partial is added into a small per-compressor hour
grid (``np.bincount``: rows of the same compressor-hour add up, as late readings of an hour gold
holds must) and each kept hour's 24 cells are gathered and summed.

The limits are the SQL path's (:func:`etl.silver._limits_from_baseline`): the mean, and 4 sigma
where at least 12 readings spread, null otherwise; sums are added in another order (so equal to
rounding; DuckDB's own order is not fixed either).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS
from etl.metrics import MIN_BASELINE_READINGS, OUTLIER_SIGMAS
from etl.windows import hours_since_epoch, sample_std, unit_keys

#: Hours in a baseline: the 24 before the reading's own.
BASELINE_HOURS = 24


def _column(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    """A partial column as numpy, nulls (no reading of the metric) as zero."""
    return np.asarray(pc.fill_null(table.column(name), 0).cast(pa.from_numpy_dtype(dtype))
                      .to_numpy())


def trailing_limits(kept: pa.Table, context: pa.Table) -> pa.Table:
    """Each row of ``kept``'s baseline mean (``mu_i``) and outlier distance (``lim_i``).

    Args:
        kept: the batch's hourly partials, one row per compressor-hour: ``org_id,
            compressor_id, hour`` and ``n_i, s_i, q_i`` per metric index ``i``.
        context: partials of other hours in the same form (the hot cache); rows of other
            compressors, or outside the hours any kept hour's baseline reaches, are ignored.

    Returns:
        ``org_id, compressor_id, hour, mu_0, lim_0, ...``, one row per row of ``kept``, in
        its order.
    """
    units = unit_keys(kept)
    comps = pc.unique(units)
    k_comp = np.asarray(pc.index_in(units, value_set=comps).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    k_hour = hours_since_epoch(kept.column("hour"))
    # each compressor's block of cells: from 24 hours before its first kept hour to its last
    first = np.full(len(comps), np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(len(comps), np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, k_comp, k_hour)
    np.maximum.at(last, k_comp, k_hour)
    first -= BASELINE_HOURS
    width = last - first + 1
    base = np.concatenate(([0], np.cumsum(width)[:-1])).astype(np.int64)
    size = int(width.sum()) if len(width) else 0

    found = pc.index_in(unit_keys(context), value_set=comps)
    c_comp = np.asarray(pc.fill_null(found, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    c_hour = (hours_since_epoch(context.column("hour")) if context.num_rows
              else np.empty(0, np.int64))
    inside = (pc.is_valid(found).to_numpy(zero_copy_only=False)
              & (c_hour >= first[c_comp]) & (c_hour <= last[c_comp]))
    cells = np.concatenate((base[k_comp] + k_hour - first[k_comp],
                            (base[c_comp] + c_hour - first[c_comp])[inside]))
    rows = np.concatenate((np.arange(kept.num_rows),
                           kept.num_rows + np.flatnonzero(inside)))
    # the 24 cells before each kept hour's own, all inside its compressor's block
    window = (base[k_comp] + k_hour - first[k_comp] - 1)[:, None] - np.arange(BASELINE_HOURS)
    # Where each cell has one row (the hourly run) its partials are gathered through a map
    # from cell to row; where two rows share a cell (late readings of an hour the cache
    # holds), the cells are summed first.
    row_at = np.full(size, kept.num_rows + context.num_rows, dtype=np.int64)
    row_at[cells] = rows
    shared = bool(len(cells)) and int(np.bincount(cells, minlength=size).max()) > 1
    gather = row_at[window]

    def window_sums(name: str, dtype: type) -> np.ndarray:
        x = np.zeros(kept.num_rows + context.num_rows + 1, dtype=dtype)
        x[:kept.num_rows] = _column(kept, name, dtype)
        x[kept.num_rows:-1] = _column(context, name, dtype)
        if shared:
            return np.bincount(cells, minlength=size, weights=x[rows])[window].sum(axis=1)
        return x[gather].sum(axis=1)

    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "org_id": kept.column("org_id"), "compressor_id": kept.column("compressor_id"),
        "hour": kept.column("hour")}
    for i in range(len(METRICS)):
        n, s, q = (window_sums(f"{p}_{i}", dtype)
                   for p, dtype in (("n", np.int64), ("s", np.float64), ("q", np.float64)))
        sd = sample_std(n, s, q)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = s / n
        lim = np.where((n >= MIN_BASELINE_READINGS) & (sd > 0), OUTLIER_SIGMAS * sd, np.nan)
        # null, not NaN: DuckDB orders NaN above every number, so a NaN distance from
        # the mean would exceed any limit
        columns[f"mu_{i}"] = pa.array(mu, pa.float64(), mask=n == 0)
        columns[f"lim_{i}"] = pa.array(lim, pa.float64(), mask=np.isnan(lim))
    return pa.table(columns)
