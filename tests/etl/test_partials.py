"""A small batch's hourly partials grouped in numpy (etl/partials.py) are DuckDB's GROUP BY
of the same readings: counts, extremes and nulls exactly, sums to rounding; grouped by
(organization, compressor, hour), an id two organizations share never mixed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altaviz.core.duck import connect as duck_connect
from altaviz.core.telemetry import METRICS
from etl.partials import hourly_partials

START = datetime(2026, 11, 2, tzinfo=UTC)


def _readings(seed: int, rows: int, compressors: int, hours: int) -> pa.Table:
    """Readings of a few compressors over a few hours, in no order; each metric missing from
    some readings, and from every reading of some compressor-hours. Compressor ids are
    shared by two organizations."""
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, compressors, rows)
    org = rng.integers(0, 2, rows)
    hour = rng.integers(0, hours, rows)
    table = pa.table({
        "compressor_id": pa.array([f"C-{c:03d}" for c in comp], pa.string()),
        "hour": pa.array([START + timedelta(hours=int(h)) for h in hour],
                         pa.timestamp("us", tz="UTC")),
        "org_id": pa.array([f"org-{o}" for o in org], pa.string())})
    for i in range(len(METRICS)):
        x = rng.normal(100.0 + 10 * i, 1.0 + i, rows)
        missing = (rng.random(rows) < 0.2) | ((comp + hour + i) % 5 == 0)
        table = table.append_column(f"m_{i}", pa.array(x, pa.float64(), mask=missing))
    return table


def _by_duckdb(readings: pa.Table) -> dict[tuple[str, str, datetime], dict[str, object]]:
    con = duck_connect(threads=1)
    con.register("readings", readings)
    aggs = ", ".join(f"count(m_{i}) AS n_{i}, sum(m_{i}) AS s_{i}, sum(m_{i} * m_{i}) AS q_{i}, "
                     f"min(m_{i}) AS lo_{i}, max(m_{i}) AS hi_{i}" for i in range(len(METRICS)))
    rows = con.execute(f"SELECT org_id, compressor_id, hour, {aggs} "
                       "FROM readings GROUP BY ALL").to_arrow_table().to_pylist()
    return {(r["org_id"], r["compressor_id"], r["hour"]): r for r in rows}


def _assert_same(mine: pa.Table, theirs: dict[tuple[str, str, datetime], dict[str, object]],
                 extremes: bool) -> None:
    rows = mine.to_pylist()
    keys = {(r["org_id"], r["compressor_id"], r["hour"]) for r in rows}
    assert len(rows) == len(theirs) == len(keys)
    for row in rows:
        expected = theirs[(row["org_id"], row["compressor_id"], row["hour"])]
        assert set(row) == {k for k in expected if extremes or k[:2] not in ("lo", "hi")}
        for key, value in row.items():
            if key[0] in "sq" and key[1] == "_":
                # the same values added in another order
                assert (value is None) == (expected[key] is None), (key, row, expected)
                if value is not None:
                    assert value == pytest.approx(expected[key], rel=1e-12), key
            else:
                assert value == expected[key], (key, value, expected[key])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 400),
       compressors=st.integers(1, 9), hours=st.integers(1, 4))
def test_the_partials_are_duckdbs_group_by(seed: int, rows: int, compressors: int,
                                           hours: int) -> None:
    readings = _readings(seed, rows, compressors, hours)
    theirs = _by_duckdb(readings)
    _assert_same(hourly_partials(readings, extremes=True), theirs, extremes=True)
    _assert_same(hourly_partials(readings, extremes=False), theirs, extremes=False)


def test_a_metric_with_no_value_in_an_hour_has_null_sums_and_extremes() -> None:
    readings = _readings(7, 60, 2, 2)
    silent = pa.nulls(60, pa.float64())
    readings = readings.set_column(readings.schema.get_field_index("m_3"), "m_3", silent)
    table = hourly_partials(readings, extremes=True)
    assert table.column("n_3").to_pylist() == [0] * table.num_rows
    for name in ("s_3", "q_3", "lo_3", "hi_3"):
        assert table.column(name).null_count == table.num_rows, name
    _assert_same(table, _by_duckdb(readings), extremes=True)


def test_no_readings_no_rows() -> None:
    table = hourly_partials(_readings(1, 5, 1, 1).slice(0, 0), extremes=True)
    assert table.num_rows == 0
    assert table.column_names[:3] == ["org_id", "compressor_id", "hour"]
    assert len(table.column_names) == 3 + 5 * len(METRICS)
