"""Long gold rows (one per compressor, metric and hour) built by hand, for the pivot's and the
COPY encoder's tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from altaviz.core.telemetry import METRICS
from etl.pivot import INTEGER_STATISTICS, LONG_COLUMNS, STATISTICS

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NAMES = [m.name for m in METRICS]
_TYPES = {"org_id": pa.string(), "compressor_id": pa.string(), "metric": pa.string(),
          "hour": pa.timestamp("us", tz="UTC")}


def long_rows(keys: list[tuple[str, str, int, int]],
              value: Callable[[int, int, str], Any]) -> pa.Table:
    """A table of :data:`LONG_COLUMNS`: row ``i`` is ``keys[i]`` = (organization, compressor,
    hours after :data:`T0`, metric index), statistic ``j`` of it ``value(i, j, stat)``."""
    rows: dict[str, list[Any]] = {c: [] for c in LONG_COLUMNS}
    for i, (org, comp, hour, m) in enumerate(keys):
        rows["org_id"].append(org)
        rows["compressor_id"].append(comp)
        rows["metric"].append(NAMES[m])
        rows["hour"].append(T0 + timedelta(hours=hour))
        for j, stat in enumerate(STATISTICS):
            rows[stat].append(value(i, j, stat))
    return pa.table({c: pa.array(v, _TYPES.get(c, pa.int64() if c in INTEGER_STATISTICS
                                               else pa.float64())) for c, v in rows.items()})
