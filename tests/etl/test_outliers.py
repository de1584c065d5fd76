"""Silver's 4-sigma outlier flag against values computed here from the raw readings with the
statistics module, for every way the trailing baseline is summed."""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

import pytest
from deltalake import DeltaTable

from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.metrics import MIN_BASELINE_READINGS, OUTLIER_SIGMAS
from etl.pipeline import run_pipeline
from etl.thresholds import Thresholds
from tests.etl.landing import T0, reading, write_landing

HOURS = 60   # more than two days: a first load of this many hours takes the bulk path


def oil(k: int, i: int) -> float:
    """Oil temperature of reading ``i`` of hour ``k``: small deterministic noise, plus a few
    readings placed just inside and well outside 4 sigma (hours 40-52)."""
    return 170.0 + 0.5 * ((7 * k + 3 * i) % 5)


def expected_outliers(values: dict[tuple[int, int], float]) -> set[tuple[int, int]]:
    """(hour, reading) pairs more than 4 sample standard deviations from the mean of the
    readings of the 24 hours before the reading's hour (at least 12 readings)."""
    flagged = set()
    for (k, i), v in values.items():
        base = [x for (h, _), x in values.items() if k - 24 <= h <= k - 1]
        if len(base) < MIN_BASELINE_READINGS:
            continue
        sd = statistics.stdev(base)
        if sd > 0 and abs(v - statistics.fmean(base)) > OUTLIER_SIGMAS * sd:
            flagged.add((k, i))
    return flagged


@pytest.mark.parametrize("knobs", [
    {},                                                                # per-hour join
    {"join_max_hours": 0, "hot_hours": 0},                             # hour grid (numpy)
    # over the grid's size cap: window functions
    {"join_max_hours": 0, "hot_hours": 0, "grid_max_hours": 10},
], ids=["join", "grid", "window-functions"])
def test_outlier_flags_match_the_trailing_24_hours(settings: Settings, db_url: str,
                                                   fleet: Fleet, knobs: dict[str, int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import etl.silver

    thresholds = Thresholds(**knobs)
    grid_calls: list[int] = []
    trailing_sums = etl.silver.trailing_sums

    def counted(*args: Any) -> Any:
        grid_calls.append(1)
        return trailing_sums(*args)

    monkeypatch.setattr(etl.silver, "trailing_sums", counted)
    values = {(k, i): oil(k, i) for k in range(HOURS) for i in range(6)}
    # the first two hours have fewer than 12 readings behind them: never flagged
    values[(1, 2)] = 230.0
    values[(40, 3)] = 190.0                 # far outside
    values[(52, 0)] = 150.0                 # far outside, below
    sd = statistics.stdev([values[(h, i)] for h in range(20, 44) for i in range(6)])
    mu = statistics.fmean([values[(h, i)] for h in range(20, 44) for i in range(6)])
    values[(44, 4)] = mu + 3.9 * sd         # just inside
    values[(44, 5)] = mu - 4.2 * sd         # just outside
    expected = expected_outliers(values)
    assert {(1, 2), (44, 4)}.isdisjoint(expected)
    assert {(40, 3), (52, 0), (44, 5)} <= expected
    rows = [reading("COMP-0001", T0 + timedelta(hours=k, minutes=10 * i), oil_temp_f=v)
            for (k, i), v in values.items()]
    if not knobs:   # the join is the method of a few hours at a time: load 10 at a time
        for k in range(0, HOURS, 10):
            write_landing(settings.landing_path, rows[6 * k:6 * (k + 10)],
                          T0 + timedelta(hours=k + 10, minutes=5))
            run_pipeline(settings, db_url, thresholds=thresholds)
    else:
        write_landing(settings.landing_path, rows, T0 + timedelta(hours=HOURS, minutes=5))
        run_pipeline(settings, db_url, thresholds=thresholds)
    silver = DeltaTable(str(settings.lake_path / "silver")).to_pyarrow_table(
        columns=["ts", "outlier_metrics"]).to_pylist()
    assert len(silver) == len(values)
    got = {(int((r["ts"] - T0) / timedelta(hours=1)), r["ts"].minute // 10)
           for r in silver if "oil_temp_f" in (r["outlier_metrics"] or [])}
    assert got == expected
    # the path named was taken
    assert len(grid_calls) == (bool(knobs) and thresholds.grid_max_hours >= HOURS)
