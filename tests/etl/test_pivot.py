"""The pivot of long gold rows into ``agg_compressor_hours`` rows (etl/pivot.py) against a plain
Python pivot: every statistic of every metric lands in its element, absent metrics and NULL
statistics are NULL, rows come in primary-key order; bad input is refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altaviz.core.telemetry import METRICS
from etl.pivot import INTEGER_STATISTICS, LONG_COLUMNS, STATISTICS, pivot
from tests.etl.long_rows import NAMES, long_rows

cells = st.tuples(st.sampled_from(["acme", "bravo"]), st.sampled_from(["C1", "C2", "C3"]),
                  st.integers(0, 30), st.integers(0, len(METRICS) - 1))


def _long(keys: list[tuple[str, str, int, int]], seed: int) -> pa.Table:
    def value(i: int, j: int, stat: str) -> Any:
        if stat in INTEGER_STATISTICS:
            return (seed + i * 7 + j) % 9
        # every fifth value missing (a stddev of one reading, no previous hour)
        return None if (seed + i + j) % 5 == 0 else seed + i + j / 10
    return long_rows(keys, value)


@settings(max_examples=40, deadline=None)
@given(st.lists(cells, min_size=1, max_size=120, unique=True), st.integers(0, 1000),
       st.booleans())
def test_pivot_matches_a_plain_python_pivot(keys: list[tuple[str, str, int, int]], seed: int,
                                            dense: bool) -> None:
    long = _long(keys, seed)
    wide = pivot(long, dense_keys=10**9 if dense else 0).to_pylist()
    expected: dict[tuple[str, str, datetime], dict[str, list[Any]]] = {}
    for row in long.to_pylist():
        out = expected.setdefault((row["org_id"], row["compressor_id"], row["hour"]),
                                  {s: [None] * len(METRICS) for s in STATISTICS})
        for stat in STATISTICS:
            out[stat][NAMES.index(row["metric"])] = row[stat]
    order = [(r["org_id"], r["hour"], r["compressor_id"]) for r in wide]
    assert order == sorted(order)   # the primary key's order
    assert {(r["org_id"], r["compressor_id"], r["hour"]): {s: r[s] for s in STATISTICS}
            for r in wide} == expected
    assert len(wide) == len(expected)


def test_a_metric_the_arrays_have_no_place_for_is_refused() -> None:
    long = _long([("acme", "C1", 0, 0)], 1).set_column(
        LONG_COLUMNS.index("metric"), "metric", pa.array(["oil_viscosity"]))
    with pytest.raises(ValueError, match="'oil_viscosity'"):
        pivot(long)


def test_two_rows_of_one_metric_and_hour_are_refused() -> None:
    long = _long([("acme", "C1", 0, 3), ("acme", "C1", 0, 4)], 1)
    long = long.set_column(LONG_COLUMNS.index("metric"), "metric",
                           pa.array([NAMES[3], NAMES[3]]))
    with pytest.raises(ValueError, match="two rows"):
        pivot(long)


def test_nothing_in_nothing_out() -> None:
    assert pivot(_long([], 0)).num_rows == 0
