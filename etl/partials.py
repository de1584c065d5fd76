"""Hourly partials of a small batch of readings, grouped in numpy.

Why this exists: silver's hourly run groups the batch's ~27,000 kept readings (4,500 units)
into ~4,500 compressor-hours of partials, count, sum, sum of squares, minimum and maximum of
each of the 24 metrics (:func:`etl.metrics.partial_aggregates`). DuckDB's hash aggregate of
those 120 aggregates on one thread would be a sizeable share of the hourly run's silver
(bench/bench_etl.py, hour phase). Here the rows are numbered by group once, and each
aggregate is one ``np.bincount`` or one sorted ``reduceat``.

The values are the SQL aggregates': counts exact, minimum and maximum exact, sums equal to
rounding (added in another order; DuckDB's own order is not fixed either), and, as in SQL,
null sums and extremes where a group has no value of the metric.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS
from etl.windows import hours_since_epoch, unit_keys


def hourly_partials(rows: pa.Table, *, extremes: bool) -> pa.Table:
    """One row per ``(org_id, compressor_id, hour)`` of ``rows``, with each metric's
    partials.

    Args:
        rows: ``org_id, compressor_id, hour`` (an hour-truncated timestamp) and each
            metric's value ``m_i`` (null: no value).
        extremes: also the minimum and maximum (``lo_i, hi_i``).

    Returns:
        ``org_id, compressor_id, hour, n_i, s_i, q_i[, lo_i, hi_i]`` per metric index
        ``i`` (metrics in :data:`METRICS` order), groups in no particular order.
    """
    units = unit_keys(rows)
    comp = np.asarray(pc.index_in(units, value_set=pc.unique(units)).to_numpy(
        zero_copy_only=False), dtype=np.int64)
    hour = hours_since_epoch(rows.column("hour"))
    first = int(hour.min()) if len(hour) else 0
    span = int(hour.max()) - first + 1 if len(hour) else 1
    keys, group = np.unique(comp * span + (hour - first), return_inverse=True)
    count = len(keys)
    # a row of each group (its first in ``order``) for the keys, the extremes' runs
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0]) if len(order) else order
    lead = pa.array(order[starts])
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "org_id": rows.column("org_id").take(lead),
        "compressor_id": rows.column("compressor_id").take(lead),
        "hour": rows.column("hour").take(lead)}
    for i in range(len(METRICS)):
        x = np.asarray(pc.fill_null(rows.column(f"m_{i}").cast(pa.float64()), np.nan)
                       .to_numpy(), dtype=np.float64)
        present = ~np.isnan(x)
        value = np.where(present, x, 0.0)
        n = np.bincount(group, weights=present, minlength=count).astype(np.int64)
        none = n == 0
        columns[f"n_{i}"] = pa.array(n)
        columns[f"s_{i}"] = pa.array(np.bincount(group, weights=value, minlength=count),
                                     mask=none)
        columns[f"q_{i}"] = pa.array(np.bincount(group, weights=value * value,
                                                 minlength=count), mask=none)
        if extremes:
            ordered = x[order]
            # fmin/fmax pass over NaN (no value); a group of no value stays NaN, masked null
            columns[f"lo_{i}"] = pa.array(np.fmin.reduceat(ordered, starts) if count
                                          else ordered, mask=none)
            columns[f"hi_{i}"] = pa.array(np.fmax.reduceat(ordered, starts) if count
                                          else ordered, mask=none)
    return pa.table(columns)
