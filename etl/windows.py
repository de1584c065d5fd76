"""Gold rows of new hours with their 1 h / 4 h / 24 h windows, computed on a dense hour grid.

Why this exists: a week's first load (or any catch-up of more than
:attr:`~etl.thresholds.Thresholds.join_max_hours` hours per compressor) needs the windows of
~750,000 compressor-hours x 24 metrics. DuckDB's window functions, over wide rows or long ones,
and a join of each hour to its 24 partials both spend their time in per-group aggregate state,
240 aggregates at a time. On a dense grid (one cell per compressor-hour, silent hours included,
24 empty cells between compressors so that no window reaches the previous compressor), a 4 h sum
is three shifted vector additions and a 24 h sum is six shifted 4 h sums, several times cheaper
(bench/bench_etl.py, full phase, times gold). Where few cells want windows (the hourly run: one
new hour per compressor), no grid is filled: each window's 24 cells are gathered from the
partials' own rows through a map from cell to row (:class:`_ByRow`), the same cells in the same
order.

How rows find their cells: :func:`grid_blocks` lays out each compressor's block from its
hour span, the tables that feed the grid carry each row's cell (``pos``, :func:`cell_sql`)
from when they are built, and :class:`_Scan` reads one metric's columns at a time in the
tables' storage order, so the wide partials are neither copied nor joined again per metric.

The results are the SQL path's (:mod:`etl.gold`) to rounding: sums are added in another order.
Semantics kept exactly: windows hold the hours ``hour - 3 .. hour`` (4 h) and ``hour - 23 ..
hour`` (24 h) of the same compressor and metric with readings; the rate of change is the
hour's mean minus the previous hour's, null when the previous hour has no readings of the
metric; standard deviations follow :func:`etl.gold._std` (0 within rounding of a constant
channel, null below two readings); flags as in :mod:`etl.gold`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS, READINGS_PER_HOUR
from etl.lake import GOLD_SCHEMA, TS
from etl.metrics import VAR_EPS

#: Empty grid cells before each compressor's hours: more than a 24 h window reaches back.
PAD = 24
_US_PER_HOUR = 3_600_000_000
#: The flag names, in the order :mod:`etl.gold` lists them.
FLAGS = ("outliers", "late", "incomplete", "spike")


class Scratch:
    """Two work grids of 8-byte cells, reused by every :func:`_windows_at` of one grid size
    (viewed as the grid's dtype): a pair of new arrays per call (10 per metric in gold,
    3 in silver's baselines) would spend its time in page faults, grids of a week being
    large."""

    def __init__(self, size: int) -> None:
        self.four, self.day = np.empty(size), np.empty(size)

    def pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two grids, as ``x``'s dtype (which must have 8-byte items) and length."""
        return (self.four[:len(x)].view(x.dtype), self.day[:len(x)].view(x.dtype))


def hours_since_epoch(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Whole hours since the epoch of a timestamp column."""
    return np.asarray(pc.cast(pc.cast(column, TS), pa.int64()).to_numpy()) // _US_PER_HOUR


def _gathers(windows: int, cells: int) -> bool:
    """Whether ``windows`` windows on a grid of ``cells`` cells are gathered, 24 cells each,
    rather than rolled over the whole grid."""
    return 3 * windows < cells


def _reduced(cells: np.ndarray, op: np.ufunc) -> tuple[np.ndarray, np.ndarray]:
    """The 4 h and 24 h windows of gathered cells (one row per window, its own cell first)."""
    return op.reduce(cells[:, :4], axis=1), op.reduce(cells, axis=1)


def _rolled(x: np.ndarray, op: np.ufunc, scratch: Scratch | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """``x`` combined over the 4 cells and the 24 cells ending at each cell (by ``op``), in
    ``scratch``'s grids when given (overwritten by the next call)."""
    four, day = scratch.pair(x) if scratch is not None else (np.empty_like(x), np.empty_like(x))
    four[:] = x
    for k in range(1, 4):
        op(four[k:], x[:-k], out=four[k:])
    day[:] = four
    for k in range(4, 24, 4):
        op(day[k:], four[:-k], out=day[k:])
    return four, day


def _windows_at(x: np.ndarray, at: np.ndarray, op: np.ufunc, scratch: Scratch | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``x`` combined over the 4 cells and the 24 cells ending at each cell of ``at`` (new
    arrays; ``scratch``: work grids to roll in).

    Few windows on a large grid (the hourly run: one new hour per compressor on ~48 cells
    each) are gathered, 24 cells per window; otherwise the whole grid is rolled
    (:func:`_rolled`): rolling every cell for one window in ~48 would be a large share of the
    hourly run's numpy time (bench/bench_etl.py, hour phase)."""
    if not _gathers(len(at), len(x)):
        four, day = _rolled(x, op, scratch)
        return four[at], day[at]
    return _reduced(x[at[:, None] - np.arange(24)], op)  # PAD empty cells precede every block


def sample_std(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Sample standard deviation from counts, sums and sums of squares, with the operations
    of :func:`etl.gold._std` in the same order (so the same doubles); NaN below two values."""
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = q - s * s / n
        value: np.ndarray = np.sqrt(np.where(spread <= VAR_EPS * q, 0.0, spread / (n - 1)))
    return np.where(n > 1, value, np.nan)


def _std(n: np.ndarray, s: np.ndarray, q: np.ndarray) -> pa.Array:
    """:func:`sample_std` as an Arrow column, null below two values."""
    return pa.array(sample_std(n, s, q), pa.float64(), mask=n <= 1)


def _flags(outliers: np.ndarray, late: np.ndarray, n: np.ndarray, spike: np.ndarray
           ) -> pa.Array:
    """The ``flags`` list column: the names of the flags that apply, in :data:`FLAGS` order."""
    return marked_names(np.stack([outliers > 0, late > 0, n < READINGS_PER_HOUR, spike],
                                 axis=1), pa.array(FLAGS, pa.string()))


def marked_names(marks: np.ndarray, names: pa.Array) -> pa.ListArray:
    """A list per row of ``marks`` (rows x len(names) booleans): the ``names`` marked in it,
    in their order; an empty list where none is."""
    offsets = np.zeros(len(marks) + 1, dtype=np.int32)
    np.cumsum(marks.sum(axis=1), out=offsets[1:])
    codes = np.broadcast_to(np.arange(len(names), dtype=np.int32), marks.shape)[marks]
    return pa.ListArray.from_arrays(pa.array(offsets), pc.take(names, pa.array(codes)))


def unit_keys(rows: pa.Table | pa.RecordBatch) -> pa.Array:
    """One text key per row for its ``(org_id, compressor_id)``: compressor ids are unique
    within an organization only, and Arrow's hash kernels (``index_in``, ``is_in``,
    ``unique``) take one column, not a pair."""
    org, comp = rows.column("org_id"), rows.column("compressor_id")
    key = pc.binary_join_element_wise(org.cast(pa.string()), comp.cast(pa.string()), "\x1f")
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


def grid_blocks(con: duckdb.DuckDBPyConnection, spans: str, name: str = "grid_blocks") -> int:
    """Create DuckDB table ``name`` (``org_id, compressor_id, h0, h1, base``): each
    compressor's block of the grid, from ``spans`` (a relation of ``org_id, compressor_id, h0,
    h1``: first and last hour, several rows per compressor allowed); returns the number of
    cells.

    Each block holds the compressor's hours ``h0 .. h1`` and is preceded by :data:`PAD`
    empty cells: a row's cell is ``base + hours since h0`` (:func:`cell_sql`). Rows outside
    their compressor's ``h0 .. h1`` have no cell: callers leave them out.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        WITH span AS (
            SELECT org_id, compressor_id, min(h0) AS h0, max(h1) AS h1,
                   (epoch(max(h1)) - epoch(min(h0)))::BIGINT // 3600 + 1 AS hours
            FROM ({spans}) GROUP BY org_id, compressor_id
        )
        SELECT org_id, compressor_id, h0, h1,
               (sum(hours + {PAD}) OVER (ORDER BY org_id, compressor_id))::BIGINT - hours
                   AS base,
               (sum(hours + {PAD}) OVER ())::BIGINT AS size
        FROM span
    """)
    row = con.execute(f"SELECT max(size) FROM {name}").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def cell_sql(hour: str, block: str) -> str:
    """SQL of a row's grid cell, given its ``hour`` and its compressor's row ``block`` of
    :func:`grid_blocks` (joined on ``org_id, compressor_id``)."""
    return f"({block}.base + (epoch({hour}) - epoch({block}.h0))::BIGINT // 3600)"


class _Scan:
    """Columns of DuckDB tables (or Arrow tables) read in storage order: every read of the
    same tables lists the same rows in the same order, so per-metric reads line up with one
    read of the keys.

    The connections run with ``preserve_insertion_order = false`` (altaviz.core.duck); it is on only
    for these plain scans, which never filter or join.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, tables: list[str | pa.Table]) -> None:
        self.con, self.tables = con, tables

    def read(self, columns: str) -> pa.Table:
        names = [c.strip() for c in columns.split(",")]
        if all(isinstance(t, pa.Table) for t in self.tables):
            # the hourly run's tables are all Arrow: the two SETs per read would cost more
            # than the selects
            parts = [t.select(names) for t in self.tables if isinstance(t, pa.Table)]
        else:
            self.con.execute("SET preserve_insertion_order = true")
            try:
                parts = [self.con.execute(f"SELECT {columns} FROM {t}").to_arrow_table()
                         if isinstance(t, str) else t.select(names) for t in self.tables]
            finally:
                self.con.execute("SET preserve_insertion_order = false")
        if len(parts) == 1:
            return parts[0]
        return pa.concat_tables([p if p.schema == parts[0].schema else p.cast(parts[0].schema)
                                 for p in parts])


def _grid(g: np.ndarray, cells: np.ndarray, values: pa.ChunkedArray, fill: float | int
          ) -> np.ndarray:
    """Grid ``g`` (overwritten) holding ``values`` at ``cells`` and ``fill`` elsewhere.

    The callers fill the same few buffers once per metric: a new array per grid and metric
    (120 for the hourly run) would spend most of its time in page faults."""
    g.fill(fill)
    # cast first: a DuckDB sum of BIGINT arrives as decimal128, whose to_numpy() builds
    # Python objects, one per value
    g[cells] = pc.fill_null(values, fill).cast(pa.from_numpy_dtype(g.dtype)).to_numpy()
    return g


#: Each partial's value where a cell has no reading of the metric, and how windows combine it.
_FILLS: dict[str, float | int] = {"n": 0, "s": 0.0, "q": 0.0, "lo": np.inf, "hi": -np.inf}
_OPS = {"n": np.add, "s": np.add, "q": np.add, "lo": np.minimum, "hi": np.maximum}


class _OnGrid:
    """One metric's partials on dense grids (:func:`_grid`), their windows by
    :func:`_windows_at`: rolled over the whole grid where most cells want one (a bulk load).

    Every value read from a grid is a copy (fancy indexing, reductions), never a view: the
    next metric refills the same buffers."""

    def __init__(self, pos: np.ndarray, size: int) -> None:
        self.pos = pos
        self.grids = {name: np.empty(size, dtype=np.int64 if name == "n" else np.float64)
                      for name in _FILLS}
        self.scratch = Scratch(size)
        self.at = np.empty(0, dtype=np.int64)
        #: the last ``have`` loaded with, its cells and its Arrow mask: a metric's five
        #: partials share them
        self._have: np.ndarray | None = None
        self._cells, self._mask = self.at, pa.array([], pa.bool_())

    def load(self, name: str, values: pa.ChunkedArray, have: np.ndarray) -> None:
        """Metric values ``values`` (one per row) of partial ``name``, where ``have``."""
        if have is not self._have:
            self._have, self._cells, self._mask = have, self.pos[have], pa.array(have)
        _grid(self.grids[name], self._cells, values.filter(self._mask), _FILLS[name])

    def aim(self, at: np.ndarray) -> None:
        """The cells whose windows the next calls give."""
        self.at = at

    def windows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Partial ``name`` combined over the 4 h and 24 h windows of the aimed cells."""
        return _windows_at(self.grids[name], self.at, _OPS[name], self.scratch)

    def own(self, name: str) -> np.ndarray:
        """Partial ``name`` of the aimed cells themselves."""
        return self.grids[name][self.at]

    def before(self, name: str) -> np.ndarray:
        """Partial ``name`` of the hour before each aimed cell."""
        return self.grids[name][self.at - 1]


class _ByRow:
    """One metric's partials left in row order, the windows' cells gathered through a map from
    cell to row: where few cells want windows (the hourly run, one new hour per compressor on
    ~48 cells), filling five grids per metric would be about half of gold's numpy time.
    Gives exactly :meth:`_OnGrid.windows`' gathered values: the same cells, in the same order.
    """

    def __init__(self, pos: np.ndarray, size: int) -> None:
        #: each cell's row, or one past the last row, which holds the fill
        self.row_at = np.full(size, len(pos), dtype=np.int64)
        self.row_at[pos] = np.arange(len(pos))
        self.values: dict[str, np.ndarray] = {}
        self.window_rows = self.own_rows = self.rows_before = np.empty(0, dtype=np.int64)

    @staticmethod
    def suits(pos: np.ndarray, out: np.ndarray, size: int) -> bool:
        """True where windows are few enough that :func:`_windows_at` would gather them, and
        no window reads a cell two rows share (a grid keeps the last row with a reading of
        the metric, this map the last row). Rows without a cell of their own share the cell
        past the grid (:func:`cells_of`), which no window reads."""
        if not _gathers(int(out.sum()), size):
            return False
        shared = np.flatnonzero(np.bincount(pos, minlength=size) > 1)
        if len(shared) == 0:
            return True
        read = pos[out][:, None] - np.arange(24)
        return not np.isin(shared, read).any()

    def load(self, name: str, values: pa.ChunkedArray, have: np.ndarray) -> None:
        """As :meth:`_OnGrid.load`."""
        fill = _FILLS[name]
        x = np.empty(len(have) + 1, dtype=np.int64 if name == "n" else np.float64)
        _raw_into(x[:-1], values)
        x[:-1][~have] = fill        # a null is a row without the metric: never in ``have``
        x[-1] = fill
        self.values[name] = x

    def aim(self, at: np.ndarray) -> None:
        """As :meth:`_OnGrid.aim`."""
        self.window_rows = self.row_at[at[:, None] - np.arange(24)]  # PAD cells: the fill
        self.own_rows = self.window_rows[:, 0]
        self.rows_before = self.window_rows[:, 1]

    def windows(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`_OnGrid.windows`."""
        return _reduced(self.values[name][self.window_rows], _OPS[name])

    def own(self, name: str) -> np.ndarray:
        """As :meth:`_OnGrid.own`."""
        return self.values[name][self.own_rows]

    def before(self, name: str) -> np.ndarray:
        """As :meth:`_OnGrid.before`."""
        return self.values[name][self.rows_before]


def _raw_into(x: np.ndarray, values: pa.ChunkedArray) -> None:
    """Fill ``x`` with ``values``, read straight from the Arrow buffers where the types match:
    a null's slot holds whatever its buffer holds, so callers overwrite them (cheaper than a
    fill and a cast per column). Otherwise (a DuckDB sum of BIGINT
    arrives as decimal128, see :func:`_grid`) filled with 0 and cast."""
    arrow_type = pa.from_numpy_dtype(x.dtype)
    chunks = values.chunks
    if values.type != arrow_type or any(c.buffers()[1] is None for c in chunks):
        x[:] = pc.fill_null(values, 0).cast(arrow_type).to_numpy()
        return
    at = 0
    for c in chunks:
        x[at:at + len(c)] = np.frombuffer(c.buffers()[1], dtype=x.dtype, count=len(c),
                                          offset=c.offset * x.dtype.itemsize)
        at += len(c)


def gold_batches(con: duckdb.DuckDBPyConnection, tables: list[str | pa.Table], size: int,
                 batch_id: int) -> Iterator[pa.RecordBatch]:
    """Gold rows (:data:`etl.lake.GOLD_SCHEMA`) of the rows of ``tables`` marked ``out``.

    Args:
        con: the DuckDB connection holding the tables.
        tables: DuckDB tables (names) or Arrow tables of wide hourly partials, one row per
            compressor-hour over all of them: ``pos`` (the row's cell in a grid of
            :func:`grid_blocks`), ``org_id, compressor_id, hour, out`` and, per metric
            index ``i``, ``n_i, s_i, q_i, lo_i, hi_i, o_i, l_i``
            (:func:`etl.metrics.partial_aggregates`). Rows with ``out`` false are context
            only (hours around the new ones, from gold): they enter the windows but yield no
            row.
        size: the grid's number of cells.
        batch_id: the ``batch_id`` of every row.

    Yields one record batch per metric, rows with readings of that metric only, in the
    order of PostgreSQL's aggregates key (organization, hour, compressor).
    """
    scan = _Scan(con, tables)
    keys = scan.read("pos, out, org_id, compressor_id, hour")
    if keys.num_rows == 0:
        return
    pos = keys.column("pos").to_numpy()
    out = pc.fill_null(keys.column("out"), False).to_numpy(zero_copy_only=False)
    # the rows to write (the hourly run: ~4,500 of ~108,000), their keys and their places in
    # key order; only they are sorted and taken from
    out_rows = np.flatnonzero(out)
    out_keys = keys.select(["org_id", "compressor_id", "hour"]).take(pa.array(out_rows))
    out_index = np.full(len(pos), -1, dtype=np.int64)   # a row's place among out_rows
    out_index[out_rows] = np.arange(len(out_rows))
    rank = np.full(len(pos), -1, dtype=np.int64)        # an out row's place in key order
    rank[out_rows[pc.sort_indices(out_keys, sort_keys=[
        ("org_id", "ascending"), ("hour", "ascending"),
        ("compressor_id", "ascending")]).to_numpy()]] = np.arange(len(out_rows))
    hours = hours_since_epoch(keys.column("hour"))
    uniq, day_index = np.unique(hours // 24, return_inverse=True)
    # the date partition of every row, formatted once per distinct day
    day_names = pa.array([np.datetime_as_string(np.datetime64(int(d), "D")) for d in uniq],
                         pa.string())
    cells = _ByRow(pos, size) if _ByRow.suits(pos, out, size) else _OnGrid(pos, size)
    for i, metric in enumerate(METRICS):
        part = scan.read(f"n_{i}, s_{i}, q_{i}, lo_{i}, hi_{i}, o_{i}, l_{i}")
        n = pc.fill_null(part.column(f"n_{i}"), 0).to_numpy()
        have = n > 0
        for name in _FILLS:
            cells.load(name, part.column(f"{name}_{i}"), have)
        outliers = pc.fill_null(part.column(f"o_{i}"), 0).to_numpy()
        late = pc.fill_null(part.column(f"l_{i}"), 0).to_numpy()
        del part
        rows = np.flatnonzero(have & out)
        if len(rows) == 0:
            continue
        rows = rows[np.argsort(rank[rows], kind="stable")]
        at = pos[rows]
        cells.aim(at)
        n4, n24 = cells.windows("n")
        s4, s24 = cells.windows("s")
        q4, q24 = cells.windows("q")
        lo4, lo24 = cells.windows("lo")
        hi4, hi24 = cells.windows("hi")
        rn, rs, rq = cells.own("n"), cells.own("s"), cells.own("q")
        prev_n, prev_s = cells.before("n"), cells.before("s")
        mean = rs / rn
        no_prev = prev_n <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = mean - prev_s / prev_n
        std24 = _std(n24, s24, q24)
        spike = ~no_prev & (np.abs(rate) > 4 * np.nan_to_num(
            std24.to_numpy(zero_copy_only=False), nan=np.inf))
        outliers, late = outliers[rows], late[rows]
        take = pa.array(out_index[rows])
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "org_id": out_keys.column("org_id").take(take),
            "compressor_id": out_keys.column("compressor_id").take(take),
            "metric": pc.take(pa.array([metric.name], pa.string()),
                              pa.array(np.zeros(len(at), dtype=np.int32))),
            "hour": out_keys.column("hour").take(take),
            "n": pa.array(rn, pa.int64()),
            "sum": pa.array(rs, pa.float64()),
            "sumsq": pa.array(rq, pa.float64()),
            "min": pa.array(cells.own("lo"), pa.float64()),
            "max": pa.array(cells.own("hi"), pa.float64()),
            "outliers": pa.array(outliers, pa.int64()),
            "late": pa.array(late, pa.int64()),
            "mean": pa.array(mean, pa.float64()),
            "stddev": _std(rn, rs, rq),
            "mean_4h": pa.array(s4 / n4, pa.float64()),
            "min_4h": pa.array(lo4, pa.float64()),
            "max_4h": pa.array(hi4, pa.float64()),
            "stddev_4h": _std(n4, s4, q4),
            "mean_24h": pa.array(s24 / n24, pa.float64()),
            "min_24h": pa.array(lo24, pa.float64()),
            "max_24h": pa.array(hi24, pa.float64()),
            "stddev_24h": std24,
            "rate_of_change": pa.array(rate, pa.float64(), mask=no_prev),
            "flags": _flags(outliers, late, rn, spike),
            "batch_id": pa.array(np.full(len(at), batch_id, dtype=np.int64)),
            "date": pc.take(day_names, pa.array(day_index[rows])),
        }
        arrays = [columns[f.name] for f in GOLD_SCHEMA]
        yield pa.RecordBatch.from_arrays(
            [(a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a).cast(f.type)
             for a, f in zip(arrays, GOLD_SCHEMA, strict=True)], schema=GOLD_SCHEMA)


#: Receives metric ``i``'s trailing sums (count, sum, sum of squares) at cells ``at``.
Finish = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def cells_of(con: duckdb.DuckDBPyConnection, rows: pa.Table, size: int,
             exclude: str | None = None) -> np.ndarray:
    """Each of ``rows``' cell (by ``org_id, compressor_id, hour``) in the grid of
    :func:`grid_blocks` table ``grid_blocks`` holding ``size`` cells, as :func:`cell_sql`
    computes it, for rows kept in Arrow (the hot partials: copying them into DuckDB would
    cost more than the windows).

    Rows outside their compressor's block, or whose ``(org_id, compressor_id, hour)`` is in the
    DuckDB relation ``exclude``, get cell ``size``: one past the grid, where no window
    reaches (the grid must then have ``size + 1`` cells)."""
    grid = con.execute("SELECT org_id, compressor_id, h0, h1, base FROM grid_blocks"
                       ).to_arrow_table()
    names = unit_keys(grid)

    block = pc.index_in(unit_keys(rows), value_set=names)
    found = pc.fill_null(pc.is_valid(block), False).to_numpy(zero_copy_only=False)
    b = pc.fill_null(block, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    h = hours_since_epoch(rows.column("hour"))
    h0, h1 = hours_since_epoch(grid.column("h0"))[b], hours_since_epoch(grid.column("h1"))[b]
    keep = found & (h >= h0) & (h <= h1)
    if exclude is not None:
        skip = con.execute(f"SELECT org_id, compressor_id, hour FROM {exclude}").to_arrow_table()
        s_block = pc.fill_null(pc.index_in(unit_keys(skip), value_set=names), -1)
        keep &= ~np.isin(b * (1 << 32) + h,
                         s_block.to_numpy(zero_copy_only=False).astype(np.int64) * (1 << 32)
                         + hours_since_epoch(skip.column("hour")))
    cells: np.ndarray = np.where(keep, grid.column("base").to_numpy()[b] + h - h0, size)
    return cells


def trailing_sums(con: duckdb.DuckDBPyConnection, table: str, size: int, finish: Finish
                  ) -> None:
    """Each ``out`` row's sums over the 24 hours before its own (``hour - 24 .. hour - 1``).

    Args:
        con: the DuckDB connection holding ``table``.
        table: a DuckDB table of wide hourly sums, one row per compressor-hour: ``pos`` (the
            row's cell in a grid of :func:`grid_blocks`), ``out`` and, per metric index
            ``i``, ``n_i, s_i, q_i``.
        size: the grid's number of cells.
        finish: called once per metric as ``finish(i, at, n, s, q)``: the ``out`` rows'
            cells and, for each, the count, sum and sum of squares of metric ``i`` over
            the 24 hours before it.

    Silver's trailing outlier baseline, as window functions over the hours give it, which
    were a large share of a bulk load's silver (bench/bench_etl.py, full phase).
    """
    scan = _Scan(con, [table])
    keys = scan.read("pos, out")
    pos = keys.column("pos").to_numpy()
    at = pos[pc.fill_null(keys.column("out"), False).to_numpy(zero_copy_only=False)]
    grids = {"n": np.empty(size, dtype=np.int64), "s": np.empty(size), "q": np.empty(size)}
    scratch = Scratch(size)
    for i in range(len(METRICS)):
        part = scan.read(f"n_{i}, s_{i}, q_{i}")
        sums = [_windows_at(_grid(g, pos, part.column(f"{name}_{i}"), 0),
                            at - 1, np.add, scratch)[1]     # the 24 h ending an hour before
                for name, g in grids.items()]
        finish(i, at, *sums)
