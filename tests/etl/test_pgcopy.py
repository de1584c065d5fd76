"""The numpy encoder of PostgreSQL's binary COPY (etl/pgcopy.py): rows COPYed into a real
PostgreSQL table read back exactly as the pivot's Arrow form holds them: every element, every
NULL element, keys with multi-byte characters, special floating-point values, across chunk
boundaries."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from altaviz.core.telemetry import METRICS
from etl.pgcopy import COLUMNS, copy_rows
from etl.pivot import INTEGER_STATISTICS, pivot_long, to_arrow
from tests.etl.long_rows import long_rows

SPECIAL = [0.0, -0.0, 1e-300, -1.5e300, math.inf, -math.inf, 123456.789012345]

cells = st.tuples(st.sampled_from(["acme", "bravo-øst"]), st.sampled_from(["C1", "C-22", "Ç333"]),
                  st.integers(0, 30), st.integers(0, len(METRICS) - 1))


def _long(keys: list[tuple[str, str, int, int]], seed: int) -> pa.Table:
    def value(i: int, j: int, stat: str) -> Any:
        if stat in INTEGER_STATISTICS:
            return None if stat == "outliers" and (seed + i) % 7 == 0 \
                else (seed + i * 7 + j) % 9 - 2
        if (seed + i + j) % 5 == 0:
            return None
        return SPECIAL[(seed + i + j) % len(SPECIAL)] * (1 + j / 10)
    return long_rows(keys, value)


@pytest.fixture
def target(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    with conn.transaction():
        conn.execute("CREATE TABLE copy_target (LIKE etl_agg_staging)")
    return conn


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(cells, min_size=1, max_size=90, unique=True), st.integers(0, 1000),
       st.integers(1, 7))
def test_copied_rows_read_back_as_the_pivot_holds_them(
        target: psycopg.Connection[Any], keys: list[tuple[str, str, int, int]], seed: int,
        chunk: int) -> None:
    dense = pivot_long(_long(keys, seed))
    expected = to_arrow(dense).to_pylist()
    with target.transaction():
        target.execute("TRUNCATE copy_target")
    copy_rows(target, "copy_target", dense, rows=chunk)
    with target.transaction():
        got = target.execute(
            f"SELECT {', '.join(COLUMNS)} FROM copy_target ORDER BY org_id, hour, compressor_id"
        ).fetchall()
    assert [dict(zip(COLUMNS, r, strict=True)) for r in got] == expected


def test_a_row_with_every_metric_present_and_one_with_none_of_a_statistic(
        target: psycopg.Connection[Any]) -> None:
    every = [("acme", "C1", 0, m) for m in range(len(METRICS))]
    one = [("acme", "C2", 0, 3)]
    dense = pivot_long(_long(every + one, 1))
    copy_rows(target, "copy_target", dense)
    with target.transaction():
        row = target.execute(
            "SELECT n, mean FROM copy_target WHERE compressor_id = 'C2'").fetchone()
        assert row is not None
        n, mean = row
        full = target.execute(
            "SELECT cardinality(array_remove(n, NULL)) FROM copy_target "
            "WHERE compressor_id = 'C1'").fetchone()
    assert full == (len(METRICS),)
    assert len(n) == len(METRICS) and [i for i, v in enumerate(n) if v is not None] == [3]
    assert len(mean) == len(METRICS) and sum(v is not None for v in mean) <= 1
