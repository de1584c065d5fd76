"""Gold rows of new hours with their 1 h / 4 h / 24 h windows, computed on a dense hour grid.

Why this exists: a week's first load (or any catch-up of more than :data:`~etl.metrics.
JOIN_MAX_HOURS` hours per compressor) needs the windows of ~750,000 compressor-hours x 24
metrics. DuckDB's window functions spent ~9 s per third of a 4,500-unit fleet on them, about
the same over wide rows as over long ones, and a join of each hour to its 24 partials ~5.6 s:
the cost is in per-group aggregate state, 240 aggregates at a time. On a dense grid (one cell
per compressor-hour, silent hours included, 24 empty cells between compressors so that no
window reaches the previous compressor), a 4 h sum is three shifted vector additions and a 24 h
sum is six shifted 4 h sums; the whole bucket takes well under a second in numpy.

The results are the SQL path's (:mod:`etl.gold`) to rounding: sums are added in another order.
Semantics kept exactly: windows hold the hours ``hour - 3 .. hour`` (4 h) and ``hour - 23 ..
hour`` (24 h) of the same compressor and metric with readings; the rate of change is the
hour's mean minus the previous hour's, null when the previous hour has no readings of the
metric; standard deviations follow :func:`etl.gold._std` (0 within rounding of a constant
channel, null below two readings); flags as in :mod:`etl.gold`.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.telemetry import METRICS, READINGS_PER_HOUR
from etl.lake import GOLD_SCHEMA, TS
from etl.metrics import VAR_EPS

#: Empty grid cells before each compressor's hours: more than a 24 h window reaches back.
PAD = 24
_US_PER_HOUR = 3_600_000_000
#: The flag names, in the order :mod:`etl.gold` lists them.
FLAGS = ("outliers", "late", "incomplete", "spike")


def _rolled(x: np.ndarray, op: np.ufunc) -> tuple[np.ndarray, np.ndarray]:
    """``x`` combined over the 4 cells and the 24 cells ending at each cell (by ``op``)."""
    four = x.copy()
    for k in range(1, 4):
        op(four[k:], x[:-k], out=four[k:])
    day = four.copy()
    for k in range(4, 24, 4):
        op(day[k:], four[:-k], out=day[k:])
    return four, day


def _std(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> pa.Array:
    """Sample standard deviation from partials, exactly as :func:`etl.gold._std`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = q - s * s / n
        value = np.where(spread <= VAR_EPS * q, 0.0, np.sqrt(spread / (n - 1)))
    return pa.array(value, pa.float64(), mask=n <= 1)


def _flags(outliers: np.ndarray, late: np.ndarray, n: np.ndarray, spike: np.ndarray
           ) -> pa.Array:
    """The ``flags`` list column: the names of the flags that apply, in :data:`FLAGS` order."""
    marks = np.stack([outliers > 0, late > 0, n < READINGS_PER_HOUR, spike], axis=1)
    offsets = np.zeros(len(n) + 1, dtype=np.int32)
    np.cumsum(marks.sum(axis=1), out=offsets[1:])
    codes = np.broadcast_to(np.arange(len(FLAGS), dtype=np.int32), marks.shape)[marks]
    names = pc.take(pa.array(FLAGS, pa.string()), pa.array(codes))
    return pa.ListArray.from_arrays(pa.array(offsets), names)


def grid_blocks(con: duckdb.DuckDBPyConnection, source: str, name: str) -> int:
    """Create DuckDB table ``name``: each compressor's block of the grid (``compressor_id, h0,
    base``); returns the number of cells in the grid.

    Each compressor gets a contiguous block of cells from its first to its last hour in
    ``source``, preceded by :data:`PAD` empty cells: a row's cell is ``base + hours since
    h0``. Only the blocks are stored; each query below computes its rows' cells with a join
    to them, so the partials are never copied.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        WITH span AS (
            SELECT compressor_id, min(hour) AS h0,
                   (epoch(max(hour)) - epoch(min(hour)))::BIGINT // 3600 + 1 AS hours
            FROM {source} GROUP BY compressor_id
        )
        SELECT compressor_id, h0,
               (sum(hours + {PAD}) OVER (ORDER BY compressor_id))::BIGINT - hours AS base,
               (sum(hours + {PAD}) OVER ())::BIGINT AS size
        FROM span
    """)
    row = con.execute(f"SELECT max(size) FROM {name}").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _cells(source: str, blocks: str, columns: str, where: str = "") -> str:
    return (f"SELECT b.base + (epoch(s.hour) - epoch(b.h0))::BIGINT // 3600 AS pos, {columns} "
            f"FROM {source} s JOIN {blocks} b USING (compressor_id) {where}")


def gold_batches(con: duckdb.DuckDBPyConnection, source: str, batch_id: int
                 ) -> Iterator[pa.RecordBatch]:
    """Gold rows (:data:`etl.lake.GOLD_SCHEMA`) of the rows of ``source`` marked ``out``.

    Args:
        con: the DuckDB connection holding ``source``.
        source: a relation (table or view) of wide hourly partials, one row per
            compressor-hour:
            ``org_id, compressor_id, hour, out`` and, per metric index ``i``, ``n_i, s_i,
            q_i, lo_i, hi_i, o_i, l_i`` (:func:`etl.metrics.partial_aggregates`). Rows with
            ``out`` false are context only (hours around the new ones, from gold): they
            enter the windows but yield no row.
        batch_id: the ``batch_id`` of every row.

    Yields one record batch per metric, rows with readings of that metric only, in the
    order of PostgreSQL's aggregates key (organization, hour, compressor).
    """
    size = grid_blocks(con, source, "grid_blocks")
    if size == 0:
        return
    keys = con.execute(_cells(source, "grid_blocks", "s.out, s.org_id, s.compressor_id, s.hour")
                       + " ORDER BY s.org_id, s.hour, s.compressor_id").to_arrow_table()
    key_pos = keys.column("pos").to_numpy()
    row_of = np.full(size, -1, dtype=np.int64)     # key row of every occupied cell
    row_of[key_pos] = np.arange(len(key_pos))
    out_cell = np.zeros(size, dtype=bool)
    out_cell[key_pos] = pc.fill_null(keys.column("out"), False).to_numpy()
    hours = pc.cast(pc.cast(keys.column("hour"), TS), pa.int64()).to_numpy() // _US_PER_HOUR
    uniq, day_index = np.unique(hours // 24, return_inverse=True)
    # the date partition of every key row, formatted once per distinct day
    day_names = pa.array([np.datetime_as_string(np.datetime64(int(d), "D")) for d in uniq],
                         pa.string())
    for i, metric in enumerate(METRICS):
        part = con.execute(_cells(
            source, "grid_blocks", f"n_{i}, s_{i}, q_{i}, lo_{i}, hi_{i}, o_{i}, l_{i}",
            f"WHERE n_{i} > 0")).to_arrow_table()
        cells = part.column("pos").to_numpy()
        grids: dict[str, np.ndarray] = {}
        for name, fill in (("n", 0), ("s", 0.0), ("q", 0.0), ("lo", np.inf), ("hi", -np.inf),
                           ("o", 0), ("l", 0)):
            g = np.full(size, fill, dtype=np.int64 if name in ("n", "o", "l") else np.float64)
            g[cells] = pc.fill_null(part.column(f"{name}_{i}"), fill).to_numpy()
            grids[name] = g
        del part
        # the output cells, in key order
        at = cells[out_cell[cells]]
        at = at[np.argsort(row_of[at], kind="stable")]
        if len(at) == 0:
            continue
        rows = pa.array(row_of[at])
        n4, n24 = _rolled(grids["n"], np.add)
        s4, s24 = _rolled(grids["s"], np.add)
        q4, q24 = _rolled(grids["q"], np.add)
        lo4, lo24 = _rolled(grids["lo"], np.minimum)
        hi4, hi24 = _rolled(grids["hi"], np.maximum)
        rn, rs, rq = grids["n"][at], grids["s"][at], grids["q"][at]
        prev_n, prev_s = grids["n"][at - 1], grids["s"][at - 1]
        mean = rs / rn
        no_prev = prev_n <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = mean - prev_s / prev_n
        std24 = _std(n24[at], s24[at], q24[at])
        spike = ~no_prev & (np.abs(rate) > 4 * np.nan_to_num(
            std24.to_numpy(zero_copy_only=False), nan=np.inf))
        outliers, late = grids["o"][at], grids["l"][at]
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "org_id": keys.column("org_id").take(rows),
            "compressor_id": keys.column("compressor_id").take(rows),
            "metric": pc.take(pa.array([metric.name], pa.string()),
                              pa.array(np.zeros(len(at), dtype=np.int32))),
            "hour": keys.column("hour").take(rows),
            "n": pa.array(rn, pa.int64()),
            "sum": pa.array(rs, pa.float64()),
            "sumsq": pa.array(rq, pa.float64()),
            "min": pa.array(grids["lo"][at], pa.float64()),
            "max": pa.array(grids["hi"][at], pa.float64()),
            "outliers": pa.array(outliers, pa.int64()),
            "late": pa.array(late, pa.int64()),
            "mean": pa.array(mean, pa.float64()),
            "stddev": _std(rn, rs, rq),
            "mean_4h": pa.array(s4[at] / n4[at], pa.float64()),
            "min_4h": pa.array(lo4[at], pa.float64()),
            "max_4h": pa.array(hi4[at], pa.float64()),
            "stddev_4h": _std(n4[at], s4[at], q4[at]),
            "mean_24h": pa.array(s24[at] / n24[at], pa.float64()),
            "min_24h": pa.array(lo24[at], pa.float64()),
            "max_24h": pa.array(hi24[at], pa.float64()),
            "stddev_24h": std24,
            "rate_of_change": pa.array(rate, pa.float64(), mask=no_prev),
            "flags": _flags(outliers, late, rn, spike),
            "batch_id": pa.array(np.full(len(at), batch_id, dtype=np.int64)),
            "date": pc.take(day_names, pa.array(day_index[row_of[at]])),
        }
        arrays = [columns[f.name] for f in GOLD_SCHEMA]
        yield pa.RecordBatch.from_arrays(
            [(a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a).cast(f.type)
             for a, f in zip(arrays, GOLD_SCHEMA, strict=True)], schema=GOLD_SCHEMA)
    con.execute("DROP TABLE grid_blocks")
