"""The hour grid's windows (etl/windows.py): gathered at a few cells or rolled over the whole
grid, a window holds the 4 or 24 cells ending at its own, never a cell of the previous block,
and both ways give the same values (sums to rounding, minimum and maximum exactly)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.windows import PAD, _rolled, _windows_at

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
