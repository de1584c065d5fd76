"""How good the failure forecasts were: scored against a simulator's ground truth.

For every fault that failed inside the backtest's range and was caught (an alert opened
between onset and failure), the unit's forecast is taken at the first alert's open and again
24 hours later (when the unit had not failed by then), from the same hourly means the hourly
run reads. The unit's forecast is its soonest one over the rules with a forecastable limit
(rules/forecast.py: when the first of its metrics reaches its critical level, i.e. how long
the unit has), and it is compared with the true failure time: absolute error in hours, and
whether the 80% band held the truth. The naive baseline is measured in the same run on the
same hours and rules: a straight line through each metric's last 6 hourly means, the unit's
soonest crossing. A fault without a forecast at a point is counted as such, not as an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

import numpy as np
import psycopg

from altaviz.core import db
from rules.backtest import EARLY_LEAD_HOURS, BacktestReport, FaultOutcome
from rules.engine import SPEED
from rules.forecast import READ_HOURS, forecast_series, naive_hours, needs_of, targets
from rules.schema import RuleSet
from rules.sources import GoldSource, PostgresSource, Source, connect_duckdb

#: The points at which a fault's forecast is scored: hours after the first alert opened.
POINTS: tuple[tuple[str, float], ...] = (("open", 0.0), ("open+24h", 24.0))


@dataclass(frozen=True)
class PointForecast:
    """One fault's forecast at one point, and the naive baseline's."""

    compressor_id: str
    mode: str
    point: str
    hour: datetime
    true_hours: float             # from the point's hour to the failure
    lead_hours: float             # from the first alert to the failure
    hours: float | None           # the model's forecast (None: no forecast)
    low: float | None
    high: float | None            # None with ``hours`` set: open-ended band
    rule_id: str | None
    naive_hours: float | None

    @property
    def inside(self) -> bool | None:
        """Whether the 80% band held the true failure time (None: no forecast)."""
        if self.hours is None or self.low is None:
            return None
        return self.low <= self.true_hours and (self.high is None or self.true_hours <= self.high)


@dataclass(frozen=True)
class ForecastScore:
    """The figures of one group of point forecasts (a fault mode and point, or all)."""

    faults: int
    with_forecast: int
    median_abs_error_h: float | None
    inside_band: float | None          # share of forecasts whose band held the truth
    naive_with_forecast: int
    naive_median_abs_error_h: float | None
    #: the naive baseline on the faults the model forecast (both made one): like for like
    naive_same_faults_median_abs_error_h: float | None = None
    same_faults_median_abs_error_h: float | None = None

    @classmethod
    def of(cls, items: Sequence[PointForecast]) -> ForecastScore:
        ours = [p for p in items if p.hours is not None]
        naive = [p for p in items if p.naive_hours is not None]
        errors = [abs(p.hours - p.true_hours) for p in ours if p.hours is not None]
        nerrors = [abs(p.naive_hours - p.true_hours) for p in naive
                   if p.naive_hours is not None]
        both = [p for p in ours if p.naive_hours is not None and p.hours is not None]
        mine = [abs(p.hours - p.true_hours) for p in both if p.hours is not None]
        theirs = [abs(p.naive_hours - p.true_hours) for p in both if p.naive_hours is not None]
        return cls(
            naive_same_faults_median_abs_error_h=float(median(theirs)) if theirs else None,
            same_faults_median_abs_error_h=float(median(mine)) if mine else None,
            faults=len(items), with_forecast=len(ours),
            median_abs_error_h=float(median(errors)) if errors else None,
            inside_band=(sum(bool(p.inside) for p in ours) / len(ours)) if ours else None,
            naive_with_forecast=len(naive),
            naive_median_abs_error_h=float(median(nerrors)) if nerrors else None)


@dataclass
class ForecastReport:
    """Forecast figures of one backtest: by point, then by fault mode ("all" included, and
    "lead > 72 h": faults whose first alert came more than 72 h before failure)."""

    points: list[PointForecast] = field(default_factory=list)
    scores: dict[str, dict[str, ForecastScore]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Plain data for ``--json`` and BENCHMARKS.md."""
        return {point: {mode: vars(sc) for mode, sc in by_mode.items()}
                for point, by_mode in self.scores.items()}


def group_scores(items: list[PointForecast]) -> dict[str, ForecastScore]:
    """Scores by fault mode, all, and faults with more than 72 h of lead."""
    out = {mode: ForecastScore.of([p for p in items if p.mode == mode])
           for mode in sorted({p.mode for p in items})}
    out["all"] = ForecastScore.of(items)
    out[f"lead > {EARLY_LEAD_HOURS:.0f} h"] = ForecastScore.of(
        [p for p in items if p.lead_hours > EARLY_LEAD_HOURS])
    return out


def score_forecasts(conn: psycopg.Connection[Any], rule_set: RuleSet, report: BacktestReport,
                    gold_uri: str | None = None) -> ForecastReport:
    """Score the forecasts of the faults in ``report`` (filled by ``rules.backtest.score``)
    against their true failure times; reads the aggregates as the backtest did, writes
    nothing."""
    stop = report.end + timedelta(hours=1)
    scored = [o for o in report.faults if o.caught and o.lead_hours is not None
              and o.fault.failure is not None and o.fault.failure <= stop]
    by_org: dict[str, list[FaultOutcome]] = {}
    for o in scored:
        by_org.setdefault(o.fault.org_id, []).append(o)
    out = ForecastReport()
    duck = connect_duckdb() if gold_uri is not None else None
    try:
        for org, outcomes in sorted(by_org.items()):
            comps = sorted({o.fault.compressor_id for o in outcomes})
            if gold_uri is not None:
                assert duck is not None
                out.points += _org_points(GoldSource(conn, duck, gold_uri), rule_set, org,
                                          comps, outcomes, report)
            else:
                with db.tenant(conn, org):
                    out.points += _org_points(PostgresSource(conn), rule_set, org, comps,
                                              outcomes, report)
    finally:
        if duck is not None:
            duck.close()
    for point, _ in POINTS:
        out.scores[point] = group_scores([p for p in out.points if p.point == point])
    return out


def _org_points(source: Source, rule_set: RuleSet, org: str, comps: list[str],
                outcomes: list[FaultOutcome], report: BacktestReport) -> list[PointForecast]:
    units = source.units(org, comps)
    tgs = targets(rule_set, units)
    t0 = report.start - timedelta(hours=READ_HOURS)
    end = report.end
    grid = source.grid(units, t0, end, needs_of(tgs))
    running = grid.running() if SPEED in grid.values else np.ones(
        (grid.hours, units.n), dtype=bool)
    col = {c: i for i, c in enumerate(units.ids)}
    out: list[PointForecast] = []
    for o in outcomes:
        f = o.fault
        assert f.failure is not None and o.lead_hours is not None
        first = f.failure - timedelta(hours=o.lead_hours)
        u = col.get(f.compressor_id)
        if u is None:
            continue
        for point, after in POINTS:
            hour = first + timedelta(hours=after)
            if hour >= f.failure or hour > end:
                continue
            j = grid.j(hour)
            lo = max(0, j - READ_HOURS + 1)
            best: tuple[float, float, float, str] | None = None
            naive_best: float | None = None
            for tg in tgs:
                y = grid.values.get((tg.metric, "mean"))
                if y is None or not np.isfinite(tg.limit[u]):
                    continue
                win, run = y[lo:j + 1, u:u + 1], running[lo:j + 1, u:u + 1]
                lim = tg.limit[u:u + 1]
                fc = forecast_series(win, run, lim, tg.comparison, tg.model)
                h = float(fc.hours[0])
                if np.isfinite(h) and (best is None or h < best[0]):
                    best = (h, float(fc.low[0]), float(fc.high[0]), tg.rule_id)
                nv = float(naive_hours(win, lim, tg.comparison)[0])
                if np.isfinite(nv) and (naive_best is None or nv < naive_best):
                    naive_best = nv
            true = (f.failure - hour) / timedelta(hours=1)
            out.append(PointForecast(
                compressor_id=f.compressor_id, mode=f.mode, point=point, hour=hour,
                true_hours=true, lead_hours=o.lead_hours,
                hours=best[0] if best else None, low=best[1] if best else None,
                high=(None if best is None or np.isinf(best[2]) else best[2]),
                rule_id=best[3] if best else None, naive_hours=naive_best))
    return out


def format_forecast_scores(fr: ForecastReport) -> list[str]:
    """The forecast figures as a table for people (the CLI's summary)."""

    def h(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} h"

    def share(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    lines = ["  time-to-failure forecast vs true failure (80% band; naive: line through the "
             "last 6 hourly means)",
             f"  {'point':<9} {'fault mode':<20} {'faults':>6} {'forecast':>8} "
             f"{'median err':>10} {'in band':>7} {'naive':>5} {'naive err':>9} "
             f"{'both: err / naive err':>21}"]
    for point, by_mode in fr.scores.items():
        for mode, sc in by_mode.items():
            both = (f"{h(sc.same_faults_median_abs_error_h)} / "
                    f"{h(sc.naive_same_faults_median_abs_error_h)}")
            lines.append(f"  {point:<9} {mode:<20} {sc.faults:>6} {sc.with_forecast:>8} "
                         f"{h(sc.median_abs_error_h):>10} {share(sc.inside_band):>7} "
                         f"{sc.naive_with_forecast:>5} {h(sc.naive_median_abs_error_h):>9} "
                         f"{both:>21}")
    return lines


__all__ = ["ForecastReport", "ForecastScore", "PointForecast", "format_forecast_scores",
           "group_scores", "score_forecasts"]
