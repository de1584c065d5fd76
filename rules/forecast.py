"""Failure forecasts: when, at the present trend, a degrading metric reaches its rule's limit.

Each forecast is one sentence of physics: over the unit's last running hours (up to
:data:`WINDOW_RUNNING_HOURS`, at least :data:`MIN_RUNNING_HOURS`; hours stopped or warming up
are skipped, so a stop neither bends nor stretches the trend), temperatures, pressures and the
other metrics follow a robust straight line (a Huber fit: a few outlying hours weigh little)
and vibration grows exponentially (the same fit on its logarithm, as late bearing distress
grows). The time to the rule's critical level (absolute part) is where the line meets it;
the 80% band comes from the slope's uncertainty: its standard error, widened for the
residuals' hour-to-hour correlation (a daily cycle makes hourly means worth fewer independent
ones), then stretched by :data:`BAND_LOW_FACTOR` and :data:`BAND_HIGH_FACTOR`, chosen on
simulated fleets that are not the ones reported (docs/BENCHMARKS.md, "Failure forecast").

No forecast at all (never a spurious "fails in 3 days") when: the unit is not running at the
evaluated hour; it ran fewer than :data:`MIN_RUNNING_HOURS` of the hours read; the slope is not
significant (its t-value, corrected the same way, under :data:`MIN_T`) or points away from the
limit; the metric is already at or past the limit (the alert says so); or the limit lies
beyond :data:`HORIZON_HOURS`.

The hourly evaluation stores the forecasts of the evaluated hour (``predictions``, under the
organization's row-level security); alert messages quote the one of the alert's rule, and a
rule with ``forecast: {warn_within_hours: N}`` raises a warning of its own (rule id
``<rule>_forecast``) while the forecast to critical is under N hours.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from altaviz.core import db
from altaviz.core.db import queries
from altaviz.core.forecast_text import FORECAST_RULE_SUFFIX, ForecastNote
from altaviz.core.payloads import Breach, Clear
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.engine import SPEED, Grid, Needs, Units, in_scope, variants_of
from rules.schema import RuleSet, ThresholdRule
from rules.sources import PostgresSource, Source

Model = Literal["linear", "exponential"]

#: Running hours a trend is fitted over (the most recent ones), and the fewest accepted.
#: 48 rather than 72: a fault's trend is young when its first alert opens, and older flat
#: hours would pull the slope down (chosen on the tuning fleets, docs/BENCHMARKS.md).
WINDOW_RUNNING_HOURS = 48
MIN_RUNNING_HOURS = 24
#: Wall-clock hours read back from the evaluated hour to find those running hours.
READ_HOURS = 96
#: The slope must be at least this many (correlation-corrected) standard errors from zero.
MIN_T = 4.0
#: Forecasts beyond this many hours are not made: a month-long extrapolation is a guess.
HORIZON_HOURS = 21 * 24.0
#: Two-sided 80% quantile of the normal distribution.
Z80 = 1.2816
#: Stretch of the slope's 80% interval (earliest hours x LOW, latest x HIGH) so that the band
#: holds about 80% of true failures: the trend is seldom a straight line to the end (faults
#: accelerate, a unit trips some time after its critical level), which the slope's own
#: uncertainty does not know. Chosen on simulated tuning fleets, never on the reported ones
#: (docs/BENCHMARKS.md, "Failure forecast").
BAND_LOW_FACTOR = 0.53
BAND_HIGH_FACTOR = 2.8
#: Huber's tuning constant (95% efficiency on normal residuals) and its iterations.
_HUBER_C = 1.345
_ITERATIONS = 6


def model_for(metric: str) -> Model:
    """Exponential growth for vibration (late bearing distress), a straight line otherwise."""
    return "exponential" if metric.startswith("vibration") else "linear"


@dataclass(frozen=True)
class Target:
    """One rule's limit to forecast, per unit of a grid (NaN: no limit for that unit)."""

    rule_id: str
    metric: str
    comparison: Literal["above", "below"]
    limit: np.ndarray
    limit_name: str
    model: Model
    warn_within_hours: float | None


def targets(rule_set: RuleSet, units: Units) -> list[Target]:
    """The forecastable limits of ``rule_set`` for ``units``: the absolute critical level (or
    its absolute part) of each enabled 1h-mean threshold rule that compares above or below.

    Relative-only levels are left out: their baseline moves daily and a forecast to it is not
    one sentence of physics.
    """
    out: dict[str, Target] = {}
    for v in variants_of(rule_set):
        rule = v.rule
        if (not isinstance(rule, ThresholdRule) or rule.window != "1h"
                or rule.aggregate != "mean" or rule.comparison == "either"):
            continue
        _, critical, _ = rule.levels_for(v.model)
        if critical is None or critical.absolute is None:
            continue
        opt = rule.forecast
        if opt is not None and not opt.enabled:
            continue
        t = out.get(rule.id)
        if t is None:
            t = Target(rule.id, rule.metric, rule.comparison,
                       np.full(units.n, np.nan), opt.limit_name if opt else "critical",
                       model_for(rule.metric), opt.warn_within_hours if opt else None)
            out[rule.id] = t
        t.limit[in_scope(v, units)] = critical.absolute
    return list(out.values())


@dataclass(frozen=True)
class SeriesForecast:
    """Forecasts of many series at once (arrays over series; NaN hours: no forecast)."""

    hours: np.ndarray        # central: running hours from the evaluated hour to the limit
    low: np.ndarray          # 80% band, earliest
    high: np.ndarray         # 80% band, latest (inf: open-ended)
    level: np.ndarray        # the trend's value at the evaluated hour (metric units)
    slope: np.ndarray        # per running hour (log units per hour for exponential)
    running_hours: np.ndarray  # running hours fitted
    first: np.ndarray        # row of the first running hour fitted (index into the window)


def fit_trend(y: np.ndarray, running: np.ndarray,
              iterations: int = _ITERATIONS) -> tuple[np.ndarray, ...]:
    """Robust straight lines through columns of ``y`` over their running hours.

    Rows are consecutive hours ending at the evaluated one. The x axis counts running hours,
    so stopped hours are skipped. Returns (level at the last row, slope, corrected standard
    error of the slope, running hours used, first row used, residual lag-1 correlation).
    """
    running = running & np.isfinite(y)
    # keep the most recent WINDOW_RUNNING_HOURS running hours of each column
    from_end = np.cumsum(running[::-1], axis=0)[::-1]
    use = running & (from_end <= WINDOW_RUNNING_HOURS)
    x = np.cumsum(use, axis=0).astype(np.float64)
    n = use.sum(axis=0).astype(np.float64)
    x_last = n                                   # x of the last used hour (1-based count)
    yz = np.where(use, y, 0.0)
    w = use.astype(np.float64)
    a = b = np.zeros(y.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(iterations):
            sw = w.sum(axis=0)
            xm = (w * x).sum(axis=0) / sw
            ym = (w * yz).sum(axis=0) / sw
            dx = np.where(use, x - xm, 0.0)
            sxx = (w * dx * dx).sum(axis=0)
            b = (w * dx * (yz - ym)).sum(axis=0) / sxx
            a = ym - b * xm
            r = np.where(use, yz - a - b * x, np.nan)
            # robust residual scale (MAD) of the current fit: an odd hour that bent the
            # first, ordinary fit loses its weight as the fit straightens
            scale = 1.4826 * np.nanmedian(np.abs(r), axis=0)
            scale = np.where(scale > 0, scale, np.nanstd(r, axis=0) + 1e-12)
            u = np.abs(np.nan_to_num(r)) / (_HUBER_C * scale)
            w = np.where(use, np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12)), 0.0)
        r0 = np.where(use, yz - a - b * x, 0.0)
        # the residuals' robust scale (MAD): one odd hour must not swamp the slope's error
        mad = 1.4826 * np.nanmedian(np.where(use, np.abs(r0), np.nan), axis=0)
        sigma2 = np.maximum(mad, 1e-9) ** 2 * n / np.maximum(n - 2, 1)
        # lag-1 correlation of consecutive used residuals (within the window)
        both = use[1:] & use[:-1]
        num = (np.where(both, r0[1:] * r0[:-1], 0.0)).sum(axis=0)
        den = (r0 * r0).sum(axis=0)
        rho = np.clip(num / np.where(den > 0, den, np.inf), 0.0, 0.95)
        inflate = np.sqrt((1 + rho) / (1 - rho))
        se = np.sqrt(sigma2 / np.where(sxx > 0, sxx, np.nan)) * inflate
        level = a + b * x_last
        first = np.argmax(use, axis=0)
    return level, b, se, n, first, rho


def _ordinary_fit(y: np.ndarray, running: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least squares over the same hours as :func:`fit_trend`, from sums only (the cheap
    screen): level at the last row, slope and its plain standard error."""
    from_end = np.cumsum(running[::-1], axis=0)[::-1]
    use = running & (from_end <= WINDOW_RUNNING_HOURS)
    x = np.cumsum(use, axis=0) * use
    yz = np.where(use, y, 0.0)
    n = use.sum(axis=0).astype(np.float64)
    sx, sy = x.sum(axis=0, dtype=np.float64), yz.sum(axis=0)
    sxx = (x * x).sum(axis=0, dtype=np.float64) - sx * sx / n
    sxy = (x * yz).sum(axis=0) - sx * sy / n
    syy = (yz * yz).sum(axis=0) - sy * sy / n
    with np.errstate(invalid="ignore", divide="ignore"):
        b = sxy / sxx
        se = np.sqrt(np.maximum(syy - b * sxy, 0.0) / np.maximum(n - 2, 1) / sxx)
        level = sy / n + b * (n - sx / n)
    return level, b, se


def forecast_series(y: np.ndarray, running: np.ndarray, limit: np.ndarray,
                    comparison: str, model: Model) -> SeriesForecast:
    """Time to ``limit`` of each column of ``y`` (hours x series) at its last row.

    ``running``: hours the unit ran steadily (same shape). Columns whose last hour is not
    running, that ran too few hours, whose trend is not significant or points away, or that
    are already past the limit get NaN hours (no forecast).
    """
    y = np.asarray(y, dtype=np.float64)
    running = np.asarray(running, dtype=bool)
    limit = np.asarray(limit, dtype=np.float64)
    if model == "exponential":
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(y > 0, np.log(y), np.nan)
            limit = np.where(limit > 0, np.log(limit), np.nan)
    sign = 1.0 if comparison == "above" else -1.0
    width = y.shape[1]
    level, slope, se = (np.full(width, np.nan) for _ in range(3))
    n, first = np.zeros(width), np.zeros(width, dtype=np.int64)
    run = running & np.isfinite(y)
    idx = np.nonzero(run[-1] & np.isfinite(limit)
                     & (run.sum(axis=0) >= MIN_RUNNING_HOURS))[0]
    if idx.size:
        yc, rc = y[:, idx], run[:, idx]
        # only the rows some column fits: the most recent WINDOW_RUNNING_HOURS running hours
        from_end = np.cumsum(rc[::-1], axis=0)[::-1]
        top = int(np.argmax((rc & (from_end <= WINDOW_RUNNING_HOURS)).any(axis=1)))
        yc, rc = yc[top:], rc[top:]
        # a cheap first pass drops the many flat series before the robust fit: an ordinary
        # fit through the running median of 3 hours (so one odd hour cannot hide a trend),
        # asking half the t-value, which leaves room for the robust fit to differ
        ys = np.where(rc, yc, np.nan)
        lo3, hi3 = np.fmin(ys[:-2], ys[1:-1]), np.fmax(ys[:-2], ys[1:-1])
        med3 = np.maximum(lo3, np.minimum(hi3, ys[2:]))      # NaN next to any gap
        ok3 = np.isfinite(med3)
        lv0, b0, se0 = _ordinary_fit(np.where(ok3, med3, 0.0), ok3)
        with np.errstate(invalid="ignore", divide="ignore"):
            keep = (sign * b0 / se0 >= MIN_T / 2) & (sign * (limit[idx] - lv0) > 0)
        if keep.any():
            cols = idx[keep]
            lv, b, s_e, nn, fr, _ = fit_trend(yc[:, keep], rc[:, keep])
            level[cols], slope[cols], se[cols], n[cols], first[cols] = lv, b, s_e, nn, fr + top
    sign = 1.0 if comparison == "above" else -1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = sign * (limit - level)               # > 0: not reached yet
        rate = sign * slope                        # > 0: moving toward the limit
        t = rate / se
        ok = (running[-1] & np.isfinite(y[-1]) & (n >= MIN_RUNNING_HOURS)
              & np.isfinite(limit) & (gap > 0) & (t >= MIN_T))
        hours = np.where(ok, gap / rate, np.nan)
        ok &= hours <= HORIZON_HOURS
        hours = np.where(ok, hours, np.nan)
        fast = rate + Z80 * se
        slow = rate - Z80 * se
        low = np.where(ok, gap / fast * BAND_LOW_FACTOR, np.nan)
        high = np.where(ok, np.where(slow > 0, gap / slow * BAND_HIGH_FACTOR, np.inf), np.nan)
    if model == "exponential":
        level = np.exp(level)
    return SeriesForecast(hours, low, high, level, slope, n, first)


def naive_hours(y: np.ndarray, limit: np.ndarray, comparison: str) -> np.ndarray:
    """The naive baseline: a least-squares line through the last 6 hourly means (wall hours,
    running or not) of each column, extended to ``limit``; NaN when it points away or the
    last hours lack data."""
    last = np.asarray(y, dtype=np.float64)[-6:]
    x = np.arange(last.shape[0], dtype=np.float64)
    ok = np.isfinite(last).all(axis=0)
    xm = x.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        b = ((x - xm)[:, None] * (last - last.mean(axis=0))).sum(axis=0) / ((x - xm) ** 2).sum()
        level = last.mean(axis=0) + b * (x[-1] - xm)
        sign = 1.0 if comparison == "above" else -1.0
        gap, rate = sign * (limit - level), sign * b
        return np.where(ok & (gap > 0) & (rate > 0), gap / rate, np.nan)


# --- the hourly run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """One stored forecast: a unit's metric toward one rule's limit, at one evaluated hour."""

    org_id: str
    compressor_id: str
    site_id: str
    rule_id: str
    metric: str
    hour: datetime
    model: Model
    input_start: datetime
    input_end: datetime
    running_hours: int
    level: float
    slope: float
    limit: float
    limit_name: str
    hours: float
    low_hours: float
    high_hours: float | None
    alerting: bool = False

    @property
    def note(self) -> ForecastNote:
        """What a message says of it."""
        unit = METRIC_BY_NAME[self.metric].unit if self.metric in METRIC_BY_NAME else ""
        return ForecastNote(limit=self.limit, limit_name=self.limit_name, unit=unit,
                            hours=self.hours, low_hours=self.low_hours,
                            high_hours=self.high_hours)


def forecast_grid(grid: Grid, rule_targets: Sequence[Target], hour: datetime) -> list[Forecast]:
    """Every forecast of ``grid``'s units at its last hour (``hour``)."""
    running = grid.running() if SPEED in grid.values else np.ones(
        (grid.hours, grid.units.n), dtype=bool)
    out: list[Forecast] = []
    units = grid.units
    for tg in rule_targets:
        y = grid.values.get((tg.metric, "mean"))
        if y is None:
            continue
        cols = np.nonzero(np.isfinite(tg.limit) & running[-1])[0]
        if not cols.size:
            continue
        f = forecast_series(y[:, cols], running[:, cols], tg.limit[cols], tg.comparison,
                            tg.model)
        for k in np.nonzero(np.isfinite(f.hours))[0].tolist():
            u = int(cols[k])
            central = float(f.hours[k])
            out.append(Forecast(
                org_id=units.org_id, compressor_id=units.ids[u], site_id=units.sites[u],
                rule_id=tg.rule_id, metric=tg.metric, hour=hour, model=tg.model,
                input_start=grid.t0 + timedelta(hours=int(f.first[k])), input_end=hour,
                running_hours=int(f.running_hours[k]), level=float(f.level[k]),
                slope=float(f.slope[k]), limit=float(tg.limit[u]), limit_name=tg.limit_name,
                hours=central, low_hours=float(f.low[k]),
                high_hours=None if math.isinf(f.high[k]) else float(f.high[k]),
                alerting=(tg.warn_within_hours is not None
                          and central < tg.warn_within_hours)))
    return out


def needs_of(rule_targets: Sequence[Target]) -> Needs:
    """What the forecasts read: each target's 1h mean, and speed for the running gate."""
    values = {(t.metric, "mean") for t in rule_targets} | {SPEED}
    return Needs(tuple(sorted(values)), (), ())


class GridCache:
    """Each organization's recent forecast inputs, kept by one worker process between hourly
    runs so that an hour reads only its new hour (and the hours the ETL changed) instead of
    the whole window again (bench/bench_forecast.py). A different unit list, different
    metrics, or an hour this process did not follow directly (another worker ran the hours
    between) falls back to reading the window; nothing is shared between processes."""

    def __init__(self) -> None:
        self._grids: dict[str, tuple[Grid, Needs]] = {}
        self._lock = threading.Lock()

    def grid(self, source: Source, units: Units, hour: datetime, needs: Needs,
             changed: Sequence[datetime] = ()) -> Grid:
        """The hours ``hour - READ_HOURS + 1 .. hour`` of ``units``; ``changed``: hours whose
        aggregates may differ from what was read before (they are read again)."""
        t0 = hour - timedelta(hours=READ_HOURS - 1)
        with self._lock:
            cached = self._grids.get(units.org_id)
        grid = None
        if cached is not None and cached[1] == needs and cached[0].units == units:
            old = cached[0]
            old_end = old.t0 + timedelta(hours=old.hours - 1)
            redo = [h for h in changed if t0 <= h <= old_end]
            # only when this process read the hour before (or this hour): otherwise another
            # worker ran the hours between and their changed hours are unknown here
            if hour - timedelta(hours=1) <= old_end <= hour and old.t0 <= t0:
                first = min([old_end + timedelta(hours=1), *redo])
                grid = Grid(units, t0, READ_HOURS,
                            {k: np.full((READ_HOURS, units.n), np.nan) for k in needs.values})
                keep = old.j(first) - old.j(t0)        # rows of the old grid still valid
                for k in needs.values:
                    grid.values[k][:keep] = old.values[k][old.j(t0):old.j(t0) + keep]
                if first <= hour:
                    grid.put(source.grid(units, first, hour, needs),
                             np.arange(units.n))
        if grid is None:
            grid = source.grid(units, t0, hour, needs)
        with self._lock:
            self._grids[units.org_id] = (grid, needs)
        return grid


def forecasts(source: Source, rule_set: RuleSet, org_id: str, hour: datetime,
              compressors: list[str] | None = None, *, cache: GridCache | None = None,
              changed: Sequence[datetime] = ()) -> list[Forecast]:
    """The forecasts of one organization at ``hour`` from ``source`` (inside its tenant
    transaction for a PostgreSQL source); ``cache``/``changed``: see :class:`GridCache`."""
    units = source.units(org_id, compressors)
    rule_targets = targets(rule_set, units)
    if not rule_targets or not units.n:
        return []
    needs = needs_of(rule_targets)
    if cache is not None:
        grid = cache.grid(source, units, hour, needs, changed)
    else:
        grid = source.grid(units, hour - timedelta(hours=READ_HOURS - 1), hour, needs)
    return forecast_grid(grid, rule_targets, hour)


def store(conn: psycopg.Connection[Any], org_id: str, hour: datetime,
          items: Sequence[Forecast]) -> None:
    """Replace the stored forecasts of ``hour`` with ``items`` (idempotent: a retried or
    repeated evaluation of the hour writes the same rows). Runs inside ``db.tenant``."""
    q = queries("predictions")
    conn.execute(q["delete_hour"], {"hour": hour})
    if not items:
        return
    with conn.cursor() as cur:
        cur.executemany(q["insert_prediction"], [{
            "org_id": org_id, "compressor_id": f.compressor_id, "rule_id": f.rule_id,
            "metric": f.metric, "hour": f.hour, "model": f.model,
            "input_start": f.input_start, "input_end": f.input_end,
            "running_hours": f.running_hours, "level": f.level, "slope": f.slope,
            "limit_value": f.limit, "limit_name": f.limit_name,
            "predicted_at": f.hour + timedelta(hours=f.hours),
            "low_at": f.hour + timedelta(hours=f.low_hours),
            "high_at": (None if f.high_hours is None
                        else f.hour + timedelta(hours=f.high_hours)),
            "alerting": f.alerting,
            "details": Jsonb({"hours": f.hours, "low_hours": f.low_hours,
                              "high_hours": f.high_hours}),
        } for f in items])


def previously_alerting(conn: psycopg.Connection[Any], hour: datetime) -> set[tuple[str, str]]:
    """(compressor, rule) whose forecast warned at the latest stored hour before ``hour``."""
    rows = conn.execute(queries("predictions")["alerting_before"], {"hour": hour}).fetchall()
    return {(str(r[0]), str(r[1])) for r in rows}


def forecast_alerts(rule_set: RuleSet, org_id: str, hour: datetime,
                    items: Sequence[Forecast], before: set[tuple[str, str]]
                    ) -> tuple[list[Breach], list[Clear]]:
    """Warnings of rules with ``forecast: {warn_within_hours: N}``: a Breach (rule id
    ``<rule>_forecast``) for each unit whose forecast to critical is under N hours, and a
    Clear for each that warned at the previous stored hour and no longer does."""
    stamp = {"rule_set_id": rule_set.rule_set_id, "rule_version": rule_set.version}
    breaches: list[Breach] = []
    now: set[tuple[str, str]] = set()
    for f in items:
        if not f.alerting:
            continue
        rule = rule_set.rule(f.rule_id)
        now.add((f.compressor_id, f.rule_id))
        opt = getattr(rule, "forecast", None)
        breaches.append(Breach(
            org_id=org_id, compressor_id=f.compressor_id, site_id=f.site_id,
            rule_id=f.rule_id + FORECAST_RULE_SUFFIX, metric=f.metric, value=f.hours,
            threshold=opt.warn_within_hours if opt is not None else None, severity="warning",
            hour=hour, escalation_delay_hours=rule.escalation_delay_hours,
            diagnosis=f"{rule.diagnosis} Forecast: {f.note.sentence()}", **stamp))
    clears = [Clear(org_id=org_id, compressor_id=comp, rule_id=rule_id + FORECAST_RULE_SUFFIX,
                    metric=_metric(rule_set, rule_id), value=None, hour=hour, **stamp)
              for comp, rule_id in sorted(before - now) if _has(rule_set, rule_id)]
    return breaches, clears


def forecast_hour(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                  hour: datetime, *, cache: GridCache | None = None,
                  changed: Sequence[datetime] = ()
                  ) -> tuple[list[Forecast], list[Breach], list[Clear]]:
    """The hourly run's forecasting for one organization: compute the forecasts of ``hour``,
    store them (replacing any of the same hour) and return them with the forecast-driven
    warnings and clears. Runs in its own tenant transaction; ``cache``, ``changed``: see
    :class:`GridCache`."""
    with db.tenant(conn, org_id):
        items = forecasts(PostgresSource(conn), rule_set, org_id, hour, cache=cache,
                          changed=changed)
        before = previously_alerting(conn, hour)
        store(conn, org_id, hour, items)
    breaches, clears = forecast_alerts(rule_set, org_id, hour, items, before)
    return items, breaches, clears


def _has(rule_set: RuleSet, rule_id: str) -> bool:
    return any(r.id == rule_id for r in rule_set.rules)


def _metric(rule_set: RuleSet, rule_id: str) -> str:
    return rule_set.rule(rule_id).metric or ""


__all__ = ["BAND_HIGH_FACTOR", "BAND_LOW_FACTOR", "FORECAST_RULE_SUFFIX", "Forecast", "GridCache",
           "SeriesForecast", "Target", "fit_trend", "forecast_alerts", "forecast_grid",
           "forecast_hour", "forecast_series", "forecasts", "model_for", "naive_hours",
           "previously_alerting", "store", "targets"]
