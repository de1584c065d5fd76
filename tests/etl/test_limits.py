"""The hourly run's outlier limits summed in numpy (etl/limits.py): each kept hour's baseline
is the 24 hours before it, of its own compressor, partials of one hour in two places added
up; and the hourly run flags the same readings with them as without the hot cache (a DuckDB
join to gold's long rows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from altaviz.core.settings import Settings
from altaviz.core.telemetry import METRICS
from etl.limits import trailing_limits
from etl.metrics import MIN_BASELINE_READINGS, OUTLIER_SIGMAS, VAR_EPS
from etl.pipeline import run_pipeline
from etl.thresholds import Thresholds
from tests.etl.landing import T0
from tests.etl.test_handoff import _landing, _next_hour, _second_lake, _silver_rows

START = datetime(2026, 11, 2, tzinfo=UTC)


def _partials(rng: np.random.Generator, keys: list[tuple[str, int]]) -> pa.Table:
    """Wide sums (``n_i, s_i, q_i``) for ``(compressor, hour)`` keys; some metrics absent."""
    rows = len(keys)
    table = pa.table({"org_id": pa.array(["acme"] * rows, pa.string()),
                      "compressor_id": pa.array([c for c, _ in keys], pa.string()),
                      "hour": pa.array([START + timedelta(hours=h) for _, h in keys],
                                       pa.timestamp("us", tz="UTC"))})
    for i in range(len(METRICS)):
        n = rng.integers(0, 7, rows)
        x = rng.normal(150.0 + i, 5.0 + i, (rows, 6))
        seen = np.arange(6) < n[:, None]
        none = n == 0
        table = (table.append_column(f"n_{i}", pa.array(n, pa.int64(), mask=none))
                 .append_column(f"s_{i}", pa.array(np.where(seen, x, 0).sum(1), mask=none))
                 .append_column(f"q_{i}", pa.array(np.where(seen, x * x, 0).sum(1),
                                                   mask=none)))
    return table


def _expected(kept: pa.Table, context: pa.Table) -> dict[str, list[float | None]]:
    """The limits by their definition, one kept row and one partial at a time."""
    rows = kept.to_pylist() + context.to_pylist()
    out: dict[str, list[float | None]] = {}
    for k in kept.to_pylist():
        for i in range(len(METRICS)):
            inside = [r for r in rows if r["compressor_id"] == k["compressor_id"]
                      and k["hour"] - timedelta(hours=24) <= r["hour"]
                      <= k["hour"] - timedelta(hours=1)]
            n = sum(r[f"n_{i}"] or 0 for r in inside)
            s = sum(r[f"s_{i}"] or 0.0 for r in inside)
            q = sum(r[f"q_{i}"] or 0.0 for r in inside)
            spread = q - s * s / n if n else 0.0
            var = 0.0 if n < 2 or spread <= VAR_EPS * q else spread / (n - 1)
            out.setdefault(f"mu_{i}", []).append(s / n if n else None)
            out.setdefault(f"lim_{i}", []).append(
                OUTLIER_SIGMAS * var ** 0.5 if n >= MIN_BASELINE_READINGS and var > 0 else None)
    return out


@given(seed=st.integers(0, 10**6), comps=st.integers(1, 4), late=st.integers(0, 2))
@settings(max_examples=15, deadline=None)
def test_limits_sum_the_24_hours_before_each_kept_hour(seed: int, comps: int,
                                                       late: int) -> None:
    """Kept hours 40 and 41 of each compressor (and ``late`` hours the context holds too);
    context: hours 0-39 of those compressors and of one the batch lacks."""
    rng = np.random.default_rng(seed)
    names = [f"C{c}" for c in range(comps)]
    kept_keys = [(c, h) for c in names for h in (40, 41)] + [
        (names[0], 30 + k) for k in range(late)]
    context_keys = [(c, h) for c in [*names, "ELSEWHERE"] for h in range(40)]
    kept, context = _partials(rng, kept_keys), _partials(rng, context_keys)
    got = trailing_limits(kept, context)
    assert got.column("compressor_id").to_pylist() == [c for c, _ in kept_keys]
    for name, want in _expected(kept, context).items():
        have = got.column(name).to_pylist()
        assert [v is None for v in have] == [v is None for v in want], name
        assert have == pytest.approx(want, rel=1e-9, abs=1e-9), name


def test_a_kept_hour_with_no_earlier_readings_has_no_limits() -> None:
    rng = np.random.default_rng(1)
    kept = _partials(rng, [("C0", 40)])
    got = trailing_limits(kept, _partials(rng, [("C0", 40 - 25), ("C1", 39)]))
    assert all(got.column(f"lim_{i}")[0].as_py() is None for i in range(len(METRICS)))
    assert all(got.column(f"mu_{i}")[0].as_py() is None for i in range(len(METRICS)))


def _silver(lake: Path) -> list[tuple[Any, ...]]:
    return _silver_rows(lake, ("compressor_id", "ts", "outlier_metrics"))


def _hourly(settings: Settings, db_url: str, hot: bool,
            monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], int]:
    """A first load, then the next hour's run with the hot cache (the limits summed in numpy)
    or without it (joined in DuckDB); silver's rows and how often the numpy limits ran."""
    import etl.silver

    _landing(settings.landing_path)
    run_pipeline(settings, db_url)
    calls = [0]

    def counted(*args: Any) -> pa.Table:
        calls[0] += 1
        return trailing_limits(*args)

    monkeypatch.setattr(etl.silver, "trailing_limits", counted)
    _next_hour(settings.landing_path)
    run_pipeline(settings, db_url, thresholds=Thresholds() if hot else Thresholds(hot_hours=0))
    monkeypatch.undo()
    return _silver(settings.lake_path), calls[0]


def test_the_hourly_run_flags_the_same_readings_as_the_join(
        settings: Settings, db_url: str, fleet: Any, tmp_path: Path, pg_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    in_numpy, calls = _hourly(settings, db_url, True, monkeypatch)
    assert calls == 1, "the hourly run did not sum its baselines in numpy"
    other, url = _second_lake(settings, tmp_path, pg_server)
    joined, calls = _hourly(other, url, False, monkeypatch)
    assert calls == 0
    assert in_numpy == joined
    outliers = [(c, ts) for c, ts, m in in_numpy if "oil_temp_f" in m]
    assert ("COMP-0002", T0 + timedelta(hours=30, minutes=30)) in outliers
