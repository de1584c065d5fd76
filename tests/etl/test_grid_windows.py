"""The hour grid's windows (etl/windows.py): gathered at a few cells or rolled over the whole
grid, a window holds the 4 or 24 cells ending at its own, never a cell of the previous block,
and both ways give the same values (sums to rounding, minimum and maximum exactly)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from altaviz.core.telemetry import METRICS
from etl.windows import PAD, _ByRow, _rolled, _windows_at, gold_batches

blocks = st.lists(st.integers(1, 60), min_size=1, max_size=6)


def _grid(lengths: list[int], seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A grid of blocks of ``lengths`` cells, each after PAD empty (zero) cells."""
    rng = np.random.default_rng(seed)
    spans, size = [], 0
    for n in lengths:
        spans.append((size + PAD, size + PAD + n))
        size += PAD + n
    x = np.zeros(size)
    for a, b in spans:
        x[a:b] = rng.normal(100.0, 20.0, b - a)
    return x, spans


@given(lengths=blocks, seed=st.integers(0, 10**6), pick=st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_gathered_windows_equal_rolled_ones(lengths: list[int], seed: int, pick: int) -> None:
    x, spans = _grid(lengths, seed)
    cells = np.array([c for a, b in spans for c in range(a, b)][::pick], dtype=np.int64)
    few = cells[: max(1, len(x) // 4 - 1)]      # few enough to be gathered
    assert 3 * len(few) < len(x)
    for op in (np.add, np.minimum, np.maximum):
        grid = x if op is np.add else np.where(x == 0, np.inf if op is np.minimum else -np.inf, x)
        four, day = _rolled(grid, op)
        got4, got24 = _windows_at(grid, few, op)
        np.testing.assert_allclose(got4, four[few], rtol=1e-12)
        np.testing.assert_allclose(got24, day[few], rtol=1e-12)
        if op is not np.add:
            assert np.array_equal(got4, four[few]) and np.array_equal(got24, day[few])
        # and the rolled path, taken when windows are many, agrees with itself
        many4, many24 = _windows_at(grid, cells, op) if 3 * len(cells) >= len(x) else (
            four[cells], day[cells])
        assert np.array_equal(many4, four[cells]) and np.array_equal(many24, day[cells])


def test_a_window_never_reaches_the_previous_block() -> None:
    x, spans = _grid([5, 30], seed=1)
    x[spans[0][0]:spans[0][1]] = 1e9          # the first compressor's hours
    first_of_second = np.array([spans[1][0]])
    four, day = _windows_at(x, first_of_second, np.add)
    assert four[0] == x[spans[1][0]] and day[0] == x[spans[1][0]]
    assert _windows_at(x, first_of_second, np.maximum)[1][0] < 1e9


def _partials(blocks: list[tuple[int, int]], seed: int, parked: int) -> tuple[pa.Table, int]:
    """Wide hourly partials (``etl.windows.gold_batches``' input) of compressors whose blocks
    hold ``(hours, new hours at the end)``, some metrics missing in some hours, and ``parked``
    context rows in the cell past the grid (where ``cells_of`` puts rows without a cell)."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 2, tzinfo=UTC)
    cols: dict[str, list] = {"pos": [], "out": [], "org_id": [], "compressor_id": [],
                             "hour": []}
    size = 0
    for c, (hours, new) in enumerate(blocks):
        base = size + PAD
        for h in range(hours):
            cols["pos"].append(base + h)
            cols["out"].append(h >= hours - new)
            cols["org_id"].append(f"org-{c % 2}")
            cols["compressor_id"].append(f"c{c:02d}")
            cols["hour"].append(start + timedelta(hours=h))
        size = base + hours
    for k in range(parked):
        cols["pos"].append(size)
        cols["out"].append(False)
        cols["org_id"].append("org-0")
        cols["compressor_id"].append(f"elsewhere-{k}")
        cols["hour"].append(start)
    rows = len(cols["pos"])
    table = pa.table({**cols, "hour": pa.array(cols["hour"], pa.timestamp("us", tz="UTC"))})
    for i in range(len(METRICS)):
        n = rng.integers(1, 7, rows) * (rng.random(rows) > 0.15)   # some hours lack it
        x = rng.normal(200.0, 30.0, (rows, 6))
        seen = np.arange(6) < n[:, None]
        s = np.where(seen, x, 0.0).sum(axis=1)
        q = np.where(seen, x * x, 0.0).sum(axis=1)
        lo = np.where(seen, x, np.inf).min(axis=1)
        hi = np.where(seen, x, -np.inf).max(axis=1)
        none = n == 0
        table = (table.append_column(f"n_{i}", pa.array(n, pa.int64()))
                 .append_column(f"s_{i}", pa.array(s, mask=none))
                 .append_column(f"q_{i}", pa.array(q, mask=none))
                 .append_column(f"lo_{i}", pa.array(lo, mask=none))
                 .append_column(f"hi_{i}", pa.array(hi, mask=none))
                 .append_column(f"o_{i}", pa.array(rng.integers(0, 2, rows) * (n > 0)))
                 .append_column(f"l_{i}", pa.array(rng.integers(0, 2, rows) * (n > 0))))
    return table, size + 1


@given(hours=st.lists(st.integers(1, 50), min_size=1, max_size=5),
       seed=st.integers(0, 10**6), parked=st.integers(0, 3))
@settings(max_examples=25, deadline=None)
def test_windows_gathered_by_row_equal_the_grids(hours: list[int], seed: int,
                                                  parked: int) -> None:
    """The hourly run's gold (one new hour per compressor, its windows gathered through the
    rows) gives exactly the rows the dense grids give."""
    table, size = _partials([(h, 1) for h in hours], seed, parked)
    pos = table.column("pos").to_numpy()
    out = table.column("out").to_numpy(zero_copy_only=False)
    assert _ByRow.suits(pos, out, size) == (3 * len(hours) < size)
    con = duckdb.connect()
    by_row = pa.Table.from_batches(list(gold_batches(con, [table], size, 7)))
    with _forced_grid():
        on_grid = pa.Table.from_batches(list(gold_batches(con, [table], size, 7)))
    assert by_row.num_rows > 0
    assert by_row.equals(on_grid)


def test_a_shared_cell_in_a_window_keeps_the_grids() -> None:
    """Two rows in one cell that a window reads: the grid's rule (the last row with a reading)
    is not the row map's, so the grids are used."""
    table, size = _partials([(30, 1), (30, 1)], seed=3, parked=0)
    pos = table.column("pos").to_numpy().copy()
    out = table.column("out").to_numpy(zero_copy_only=False)
    assert _ByRow.suits(pos, out, size)
    pos[5] = pos[6]     # hour 5 of the first compressor now claims hour 6's cell
    assert not _ByRow.suits(pos, out, size)


@contextlib.contextmanager
def _forced_grid() -> Iterator[None]:
    suits = _ByRow.suits
    _ByRow.suits = staticmethod(lambda pos, out, size: False)  # type: ignore[method-assign]
    try:
        yield
    finally:
        _ByRow.suits = suits  # type: ignore[method-assign]
