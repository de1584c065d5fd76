"""Failure forecasts (rules/forecast.py) against analytic answers, and never a spurious one."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from altaviz.core.forecast_text import ForecastNote, forecast_line
from rules.forecast import (
    HORIZON_HOURS,
    MIN_RUNNING_HOURS,
    WINDOW_RUNNING_HOURS,
    forecast_series,
    model_for,
    naive_hours,
)
from rules.forecast_backtest import ForecastScore, PointForecast, group_scores

HOURS = 120


def _run(y: np.ndarray, limit: float, comparison: str = "above", model: str = "linear",
         running: np.ndarray | None = None):
    y2 = y.reshape(len(y), -1)
    run = np.ones_like(y2, dtype=bool) if running is None else running.reshape(y2.shape)
    return forecast_series(y2, run, np.full(y2.shape[1], limit), comparison,
                           model)  # type: ignore[arg-type]


def test_linear_rise_meets_the_analytic_time() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(HOURS, dtype=float)
    y = 250.0 + 0.5 * t + rng.normal(0, 1.0, HOURS)
    f = _run(y, 350.0)
    truth = (350.0 - (250.0 + 0.5 * t[-1])) / 0.5      # 101 h
    assert f.hours[0] == pytest.approx(truth, rel=0.05)
    assert f.low[0] < truth < f.high[0]
    assert f.running_hours[0] == WINDOW_RUNNING_HOURS


def test_falling_pressure_toward_a_low_limit() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(HOURS, dtype=float)
    y = 60.0 - 0.1 * t + rng.normal(0, 0.3, HOURS)      # oil pressure toward 45 psig
    f = _run(y, 45.0, "below")
    truth = ((60.0 - 0.1 * t[-1]) - 45.0) / 0.1
    assert f.hours[0] == pytest.approx(truth, rel=0.08)


def test_exponential_vibration_growth_meets_the_analytic_time() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(HOURS, dtype=float)
    y = 1.5 * np.exp(0.02 * t) * (1 + rng.normal(0, 0.02, HOURS))
    assert model_for("vibration_frame_mm_s") == "exponential"
    f = _run(y, 25.0, model="exponential")
    truth = np.log(25.0 / 1.5) / 0.02 - t[-1]            # about 21.7 h
    assert f.hours[0] == pytest.approx(truth, abs=2.5)
    assert f.level[0] == pytest.approx(1.5 * np.exp(0.02 * t[-1]), rel=0.05)


def test_flat_or_noisy_or_cycling_metrics_give_no_forecast() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(HOURS, dtype=float)[:, None]
    n = 2000
    flat = 300 + rng.normal(0, 3.0, (HOURS, n))
    daily = 300 + 10 * np.sin(2 * np.pi * (t + rng.uniform(0, 24, n)) / 24) \
        + rng.normal(0, 2.0, (HOURS, n))
    # noise correlated hour to hour (a random walk of small steps around a level)
    walk = 300 + np.cumsum(rng.normal(0, 0.7, (HOURS, n)), axis=0) * 0.3 \
        + rng.normal(0, 1.0, (HOURS, n))
    for y in (flat, daily, walk):
        f = forecast_series(y, np.ones_like(y, dtype=bool), np.full(n, 350.0), "above",
                            "linear")
        spurious = np.isfinite(f.hours) & (f.hours < 72)
        assert spurious.sum() <= n * 0.001, int(spurious.sum())
    f = forecast_series(flat, np.ones_like(flat, dtype=bool), np.full(n, 350.0), "above",
                        "linear")
    assert np.isnan(f.hours).mean() > 0.99


def test_a_unit_that_stops_gets_no_forecast() -> None:
    t = np.arange(HOURS, dtype=float)
    y = 250.0 + 0.5 * t
    running = np.ones(HOURS, dtype=bool)
    running[-3:] = False                                  # stopped for the last 3 hours
    f = _run(y, 350.0, running=running)
    assert np.isnan(f.hours[0])
    running[:] = True
    running[: HOURS - MIN_RUNNING_HOURS + 1] = False      # ran too few hours
    assert np.isnan(_run(y, 350.0, running=running).hours[0])


def test_stopped_hours_neither_bend_nor_stretch_the_trend() -> None:
    # the metric rises only while running; a 20-hour stop (values decaying) is skipped
    running = np.ones(HOURS, dtype=bool)
    running[50:70] = False
    runs = np.cumsum(running)
    y = np.where(running, 250.0 + 0.5 * runs, 150.0)
    f = _run(y, 350.0, running=running)
    assert f.hours[0] == pytest.approx((350.0 - (250.0 + 0.5 * runs[-1])) / 0.5, rel=0.01)


def test_no_forecast_when_trend_points_away_past_limit_or_beyond_horizon() -> None:
    t = np.arange(HOURS, dtype=float)
    assert np.isnan(_run(300 - 0.5 * t, 350.0).hours[0])          # cooling
    assert np.isnan(_run(360 + 0.5 * t, 350.0).hours[0])          # already past
    slow = 200 + 0.001 * t                                        # decades away
    assert np.isnan(_run(slow, 350.0).hours[0])
    assert HORIZON_HOURS < 1e4


def test_naive_baseline_is_a_line_through_the_last_six_hours() -> None:
    y = np.array([0, 0, 0, 100, 101, 102, 103, 104, 105], dtype=float)[:, None]
    assert naive_hours(y, np.array([110.0]), "above")[0] == pytest.approx(5.0)
    assert np.isnan(naive_hours(y[::-1], np.array([110.0]), "above")[0])


def test_forecast_wording_is_pinned() -> None:
    note = ForecastNote(limit=350.0, limit_name="shutdown", unit="F", hours=60.0,
                        low_hours=43.2, high_hours=81.6)
    assert note.sentence() == "at this rate reaches 350 F (shutdown) in about 2.5 days (1.8-3.4)"
    short = ForecastNote(limit=45.0, limit_name="critical", unit="psig", hours=20.2,
                         low_hours=15.0, high_hours=None)
    assert forecast_line(short) == [
        "Forecast: at this rate reaches 45 psig (critical) in about 20 h (at least 15), "
        "80% band, counting running time only."]
    assert forecast_line(None) == []


def test_one_odd_hour_neither_hides_nor_bends_a_trend() -> None:
    t = np.arange(HOURS, dtype=float)
    y = 150 + 0.25 * t + np.where(t % 2 == 1, 0.3, -0.3)
    clean = _run(y, 190.0)
    y[-12] = 400.0                                        # a sensor glitch in one hourly mean
    glitch = _run(y, 190.0)
    assert glitch.hours[0] == pytest.approx(clean.hours[0], rel=0.03)


def test_forecast_scores_count_errors_band_and_the_naive_baseline_like_for_like() -> None:
    t0 = datetime(2026, 11, 10, tzinfo=UTC)

    def p(true: float, hours: float | None, low: float | None, high: float | None,
          naive: float | None, mode: str = "bearing_wear") -> PointForecast:
        return PointForecast(compressor_id="C", mode=mode, point="open", hour=t0,
                             true_hours=true, lead_hours=true, hours=hours, low=low,
                             high=high, rule_id="r" if hours else None, naive_hours=naive)

    items = [p(100, 90, 70, 130, 40),       # error 10, inside; naive error 60
             p(100, 150, 120, 200, 110),    # error 50, outside (truth below the band)
             p(100, 80, 60, None, None),    # error 20, inside an open-ended band
             p(100, None, None, None, 100)]  # no forecast: not an error
    sc = ForecastScore.of(items)
    assert (sc.faults, sc.with_forecast, sc.naive_with_forecast) == (4, 3, 3)
    assert sc.median_abs_error_h == 20 and sc.inside_band == pytest.approx(2 / 3)
    assert sc.naive_median_abs_error_h == 10                 # over its own 3 forecasts
    assert sc.same_faults_median_abs_error_h == 30           # the two both forecast
    assert sc.naive_same_faults_median_abs_error_h == 35
    groups = group_scores([*items, p(50, 45, 40, 60, 49, "oil_degradation")])
    assert set(groups) == {"bearing_wear", "oil_degradation", "all", "lead > 72 h"}
    assert groups["lead > 72 h"].faults == 4
