"""Independent implementations the ETL's faster paths are checked against.

:func:`window_features` computes gold's window features with DuckDB's window functions over
gold's own hourly partials: the plain-SQL way, kept here as an oracle for the hour grid
(etl/windows.py) and the join of each hour to its partials (etl/gold.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from altaviz.core.duck import connect
from altaviz.core.telemetry import READINGS_PER_HOUR
from etl.metrics import VAR_EPS

#: The features :func:`window_features` returns, in its column order after the key.
FEATURES = ("mean", "stddev", "mean_4h", "min_4h", "max_4h", "stddev_4h", "mean_24h",
            "min_24h", "max_24h", "stddev_24h", "rate_of_change")


def _std(n: str, s: str, q: str) -> str:
    """Sample standard deviation from partials; 0 within rounding of a constant channel."""
    spread = f"({q} - {s} * {s} / {n})"
    return (f"CASE WHEN {n} > 1 THEN CASE WHEN {spread} <= {VAR_EPS} * {q} THEN 0.0 "
            f"ELSE sqrt({spread} / ({n} - 1)) END END")


def window_features(lake: Path) -> dict[tuple[str, str, Any], tuple[Any, ...]]:
    """``(compressor_id, metric, hour) -> (*FEATURES, flags)`` for every row of the lake's
    gold table, recomputed from the table's partials (``n, sum, sumsq, min, max, outliers,
    late``) by RANGE window functions."""
    w4 = ("PARTITION BY compressor_id, metric ORDER BY hour "
          "RANGE BETWEEN INTERVAL 3 HOURS PRECEDING AND CURRENT ROW")
    w24 = ("PARTITION BY compressor_id, metric ORDER BY hour "
           "RANGE BETWEEN INTERVAL 23 HOURS PRECEDING AND CURRENT ROW")
    con = connect()
    try:
        rows = con.execute(f"""
            WITH w AS (
                SELECT compressor_id, metric, hour, n, sum, sumsq, outliers, late,
                    sum(n) OVER w4 AS n4, sum(sum) OVER w4 AS s4, sum(sumsq) OVER w4 AS q4,
                    min(min) OVER w4 AS min_4h, max(max) OVER w4 AS max_4h,
                    sum(n) OVER w24 AS n24, sum(sum) OVER w24 AS s24,
                    sum(sumsq) OVER w24 AS q24,
                    min(min) OVER w24 AS min_24h, max(max) OVER w24 AS max_24h,
                    lag(hour) OVER o AS prev_hour, lag(sum / n) OVER o AS prev_mean
                FROM delta_scan('{lake / "gold"}')
                WINDOW w4 AS ({w4}), w24 AS ({w24}),
                       o AS (PARTITION BY compressor_id, metric ORDER BY hour)
            ), f AS (
                SELECT *, sum / n AS mean, {_std("n", "sum", "sumsq")} AS stddev,
                    s4 / n4 AS mean_4h, {_std("n4", "s4", "q4")} AS stddev_4h,
                    s24 / n24 AS mean_24h, {_std("n24", "s24", "q24")} AS stddev_24h,
                    CASE WHEN prev_hour = hour - INTERVAL 1 HOUR THEN sum / n - prev_mean END
                        AS rate_of_change
                FROM w
            )
            SELECT compressor_id, metric, hour, {", ".join(FEATURES)},
                list_filter([
                    CASE WHEN outliers > 0 THEN 'outliers' END,
                    CASE WHEN late > 0 THEN 'late' END,
                    CASE WHEN n < {READINGS_PER_HOUR} THEN 'incomplete' END,
                    CASE WHEN abs(rate_of_change) > 4 * stddev_24h THEN 'spike' END
                ], x -> x IS NOT NULL) AS flags
            FROM f
        """).fetchall()
    finally:
        con.close()
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
