"""The rule engine: every rule kind evaluated on dense (hour x unit) arrays in numpy.

One implementation serves the hourly evaluation, ``rules backtest`` and ``rules diff``; only
where the aggregates come from differs (rules/sources.py: PostgreSQL under the tenant's
row-level security, or the lake's gold table). A source fills a :class:`Grid`: for each
(metric, column) a rule reads, an array with one row per hour and one column per unit (NaN:
no value), plus a presence mask per metric (an aggregate row exists, even with a NULL value)
and a data mask per watched metric (a row with readings, what no-data rules count).

On a dense grid "the last N hours" is a difference of cumulative sums along the hour axis, so
persistence, clearing and hysteresis are a few whole-array operations per rule. The flags use
the IEEE-754 operations of the SQL the engine replaced, in the same order (``least`` and
``greatest`` ignore a missing baseline as ``fmin``/``fmax`` do), so values and thresholds are
bit-identical to it; tests/rules/test_equivalence.py holds the engine to the SQL reference on
randomized aggregates.

Semantics, per (compressor, rule) and hour ``h`` (hours are the aggregate's hour-start):

* *beyond(level)*: the rule's aggregate at ``h`` is at or past the level (``above``: >=,
  ``below``: <=, ``either``: |value - baseline| >= offset). Relative levels use the baseline of
  ``h``'s UTC day; "whichever comes first" combines absolute and relative. With the running
  gate (``running_only``), an hour in which the unit had not run steadily for 4 hours has no
  value: neither beyond nor normal; nor has an hour at which the metric (or a channel it is
  computed from, speed aside) was frozen, its 4-hour standard deviation exactly zero (see
  :func:`machine_watch`; the stuck rules report the transmitter).
* *firing*: at least ``persistence.hours`` of the last ``persistence.of`` hours (present rows
  only) are beyond the first level (warning, or critical when there is none); severity is
  ``critical`` when as many are beyond critical.
* *normal*: a row has a value on the normal side of the clear level (default: the warning).
  Missing hours are never normal. *cleared*: the last ``clear_after_hours`` hours all normal.
  Clearing dominates: an hour that is both firing and cleared counts as cleared.

What is reported for the requested hours ``[start, end]`` (both inclusive), at hours where the
rule's metric has a row:

* a Breach row for every hour at which a rule is *firing* (for the latest hour: the breach
  state at that hour; in the hysteresis band between clear and warning an open episode is
  neither re-reported nor cleared);
* a Clear row at the first *cleared* hour after an hour that was not cleared, when a breach
  lies in the hours ``h - span .. h`` (``span``: ``lookback_hours`` plus the rule set's longest
  persistence or clear window, see :func:`history_start`) or the hour before the clear window
  was in the band. State before ``start`` is reconstructed from that history; consumers treat
  a Clear for a rule without an open alert as a no-op;
* no-data rules: a Breach row for each hour at which the compressor (or the rule's metric) has
  had no aggregate with readings for ``warning_after_hours`` (value = hours without data,
  counted from the hour before the history the evaluation reads when there is none), and a
  Clear row at the first hour data is back. An offline rule (a no-data rule of one carried
  channel) counts only the running hours of that silence, fires only at a running hour and
  judges only the units whose channels include its metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

import numpy as np

from altaviz.core.errors import InputError
from altaviz.core.telemetry import METRIC_SOURCES
from rules.schema import (
    RUNNING_SHARE,
    Expected,
    Level,
    LevelRule,
    NoDataRule,
    OfflineRule,
    RuleSet,
    StuckRule,
    ThresholdRule,
)

DEFAULT_LOOKBACK_HOURS = 6
#: The running gate's input: the slowest speed of the last 4 hours.
SPEED = ("speed_rpm", "min_4h")
#: A transmitter frozen on one value (a stuck sensor) reports a standard deviation of exactly
#: zero over 4 hours; a live one on a running unit never does at the reported resolution.
FLAT = "stddev_4h"
#: Hours of :data:`FLAT`'s window: a stuck rule trusts it only when each of them has a row
#: (at the start of a unit's history or after a gap, fewer hours would look frozen sooner).
STUCK_WINDOW = 4
_NAN = float("nan")
T = TypeVar("T")


def hour_of(ts: datetime) -> datetime:
    """``ts`` truncated to its UTC hour (a naive datetime is an error, not a guess)."""
    if ts.tzinfo is None:
        raise InputError(f"hour {ts.isoformat()} has no time zone; pass UTC datetimes")
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def midnight(day: date) -> datetime:
    """The first hour of a UTC day."""
    return datetime.combine(day, time.min, tzinfo=UTC)


@dataclass(frozen=True)
class Variant:
    """One (rule, model variant): a rule with per-model overrides becomes one variant per
    overridden model plus a default variant for every other model in its scope."""

    rule: LevelRule
    model: str | None                  # an overridden model, or None: the default variant
    models: tuple[str, ...] | None     # default variant: the scope's models (None: all)
    except_models: tuple[str, ...]     # default variant: models that have their own variant
    first: Level
    critical: Level | None
    clear: Level

    @property
    def m(self) -> int:
        return self.rule.persistence.of

    @property
    def n(self) -> int:
        return self.rule.persistence.hours

    @property
    def k(self) -> int:
        return self.rule.clear_after_hours

    @property
    def reach(self) -> int:
        """Hours of rows a firing decision reads: the persistence window, and for a stuck
        rule the 3 hours before it that its first flat 4-hour window must hold rows for."""
        return self.m + (STUCK_WINDOW - 1 if isinstance(self.rule, StuckRule) else 0)

    @property
    def baseline_days(self) -> int | None:
        rule = self.rule
        return rule.baseline.days if isinstance(rule, ThresholdRule) and rule.baseline else None

    @property
    def baseline_keys(self) -> tuple[str, ...]:
        """The baseline values the variant reads (see :func:`baseline_keys`)."""
        rule = self.rule
        if not isinstance(rule, ThresholdRule) or rule.baseline is None:
            return ()
        return baseline_keys(rule.metric, rule.baseline.expected)


def model_key(metric: str, expected: Expected) -> str:
    """The name of a fitted expected-value model (``metric~input+input[~log][~prop]``)."""
    return (f"{metric}~{'+'.join(expected.inputs)}" + ("~log" if expected.log else "")
            + ("~prop" if expected.proportional else ""))


def baseline_keys(metric: str, expected: Expected | None) -> tuple[str, ...]:
    """The per-day baseline values of a rule: the metric's median, or its fitted model's
    intercept (``KEY#0``) and slopes (``KEY#1`` ...), each stored as one baseline."""
    if expected is None:
        return (metric,)
    key = model_key(metric, expected)
    return tuple(f"{key}#{i}" for i in range(len(expected.inputs) + 1))


def parse_model(key: str) -> tuple[str, tuple[str, ...], bool, bool, int]:
    """(metric, inputs, log, proportional, component) of a model component key (see
    :func:`baseline_keys`)."""
    body, component = key.rsplit("#", 1)
    parts = body.split("~")
    return (parts[0], tuple(parts[1].split("+")), "log" in parts[2:], "prop" in parts[2:],
            int(component))


def frozen_watch(rule: ThresholdRule) -> tuple[str, ...]:
    """The metrics whose freezing voids an expected-value rule's expectation: its metric, its
    model's inputs and the channels each is computed from (a stage ratio's two pressures: a
    frozen one leaves the ratio moving with the other, wrong but not flat)."""
    spec = rule.baseline
    return _watched((rule.metric, *(spec.expected.inputs if spec and spec.expected else ())))


def machine_watch(rule: LevelRule) -> tuple[str, ...]:
    """The metrics whose freezing voids a machine rule's reading on a running unit: its metric
    and the channels it is computed from (speed aside: a fixed-speed unit's governor holds it
    on one value for days). A stuck transmitter under a setpoint is the stuck notice's news,
    not a machine fault; a rule without the running gate (the stop rule) reads speed only."""
    if isinstance(rule, StuckRule) or not rule.running_only:
        return ()
    return tuple(m for m in _watched((rule.metric,)) if m != SPEED[0])


def frozen(grid: Grid, names: Iterable[str]) -> np.ndarray | None:
    """Grid hours at which any of ``names`` was flat (4-hour standard deviation exactly zero:
    a frozen transmitter); None when the grid holds none of their spreads."""
    out: np.ndarray | None = None
    for name in names:
        flat = grid.values.get((name, FLAT))
        if flat is not None:
            out = flat == 0.0 if out is None else out | (flat == 0.0)
    return out


def _watched(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` and the metrics each is computed from (see :func:`frozen_watch`)."""
    return tuple(dict.fromkeys(x for n in names for x in (n, *METRIC_SOURCES.get(n, ()))))


def count_key(key: str) -> str:
    """The entry of a baseline's running-hour count beside its value in a bases mapping."""
    return key + "|n"


def variants_of(rule_set: RuleSet) -> list[Variant]:
    """The enabled threshold and rate-of-change rules as variants (see :class:`Variant`)."""
    out: list[Variant] = []
    for rule in rule_set.rules:
        if isinstance(rule, NoDataRule) or not rule.enabled:
            continue
        scope = rule.applies_to
        choices: list[tuple[str | None, tuple[str, ...] | None]] = [
            (m, None) for m in rule.models]
        choices.append((None, tuple(scope.models) if scope.models is not None else None))
        for model, models in choices:
            warning, critical, clear = rule.levels_for(model)
            first = warning if warning is not None else critical
            assert first is not None
            out.append(Variant(rule, model, models, tuple(rule.models), first, critical, clear))
    return out


def no_data_rules(rule_set: RuleSet) -> list[NoDataRule]:
    """The enabled no-data rules."""
    return [r for r in rule_set.rules if isinstance(r, NoDataRule) and r.enabled]


def history_start(variants: list[Variant], start: datetime, lookback_hours: int) -> datetime:
    """The first hour the threshold rules read to evaluate from ``start``: persistence and
    clear windows plus ``lookback_hours`` of episode history. Every output hour depends only
    on the rows of its own span, so a range can be evaluated in independent chunks."""
    span = max(max(v.reach, v.k + 1) for v in variants) + lookback_hours
    return start - timedelta(hours=span)


@dataclass(frozen=True)
class Row:
    """One firing or clearing (compressor, rule, hour): a Breach, a Clear or both."""

    rule_id: str
    metric: str
    compressor_id: str
    site_id: str
    hour: datetime
    value: float | None
    firing: bool
    critical: bool
    threshold: float | None
    clear: bool


def row_order(r: Row) -> tuple[datetime, str, str]:
    """The order of evaluation rows: by hour, unit and rule."""
    return r.hour, r.compressor_id, r.rule_id


@dataclass(frozen=True)
class Units:
    """The organization's compressors an evaluation covers, in id order (grid columns)."""

    org_id: str
    ids: list[str]
    sites: list[str]
    models: list[str]
    rated_rpm: list[float]
    #: The channels each unit carries (compressors.channels); None (for all units, or for
    #: one): not recorded, every channel counts as carried.
    channels: list[frozenset[str] | None] | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> Units:
        """The units where ``keep`` is true."""
        idx = np.nonzero(keep)[0].tolist()
        return Units(self.org_id, [self.ids[i] for i in idx], [self.sites[i] for i in idx],
                     [self.models[i] for i in idx], [self.rated_rpm[i] for i in idx],
                     None if self.channels is None else [self.channels[i] for i in idx])

    def carry(self, metric: str) -> np.ndarray:
        """Which units carry the channel ``metric``."""
        if self.channels is None:
            return np.ones(self.n, dtype=bool)
        return np.array([c is None or metric in c for c in self.channels], dtype=bool)


@dataclass(frozen=True)
class Needs:
    """What a source must read for an evaluation."""

    values: tuple[tuple[str, str], ...]    # (metric, column) pairs, each a value array
    present: tuple[str, ...]               # metrics whose presence mask the rules use
    data: tuple[str | None, ...]           # no-data rules' metrics (None: any metric)


@dataclass
class Grid:
    """Aggregates of ``units`` for the hours ``t0 .. t0 + hours - 1`` as dense arrays."""

    units: Units
    t0: datetime
    hours: int
    values: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    present: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict[str | None, np.ndarray] = field(default_factory=dict)

    def j(self, t: datetime) -> int:
        """The grid row of hour ``t``."""
        return int((t - self.t0).total_seconds() // 3600)

    def widened(self, t0: datetime) -> Grid:
        """This grid from the earlier hour ``t0``, the added hours without aggregates."""
        extra = self.j(t0) * -1

        def pad(a: np.ndarray, fill: object) -> np.ndarray:
            out = np.full((extra + self.hours, self.units.n), fill, dtype=a.dtype)
            out[extra:] = a
            return out
        return Grid(self.units, t0, self.hours + extra,
                    {k: pad(a, _NAN) for k, a in self.values.items()},
                    {k: pad(a, False) for k, a in self.present.items()},
                    {k: pad(a, False) for k, a in self.data.items()})

    def put(self, part: Grid, columns: np.ndarray) -> None:
        """Copy ``part`` (the units at ``columns``, hours within this grid's) into the grid."""
        rows = slice(self.j(part.t0), self.j(part.t0) + part.hours)
        for pair, a in part.values.items():
            self.values[pair][rows, columns] = a
        for metric, b in part.present.items():
            self.present[metric][rows, columns] = b
        for watched, b in part.data.items():
            self.data[watched][rows, columns] = b

    def running(self) -> np.ndarray:
        """Hours each unit ran steadily the last 4 hours (the running gate)."""
        rated = np.asarray(self.units.rated_rpm, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.asarray(self.values[SPEED] >= RUNNING_SHARE * rated[None, :])


@dataclass(frozen=True)
class Plan:
    """The hours and inputs of one evaluation of ``[start, end]``."""

    variants: list[Variant]
    no_data: list[NoDataRule]
    start: datetime
    end: datetime
    lo: datetime              # first hour the level rules read
    nd_lo: datetime           # first hour the no-data rules read
    lookback_hours: int
    baselines: tuple[tuple[str, int], ...]    # (key, days) the relative rules need

    @property
    def span(self) -> int:
        """Hours of history each output hour of the level rules depends on."""
        return int((self.start - self.lo).total_seconds() // 3600)

    @property
    def recent_hours(self) -> int:
        """The hours up to ``end`` that decide ``end``'s rows, except how far back a clearing
        rule's breach lies and when a silence began (see :func:`history_dependent`)."""
        r = max((max(v.reach, v.k + 1) for v in self.variants), default=1)
        return max(r, 2) if self.no_data else r

    @property
    def first_hour(self) -> datetime:
        """The first hour any rule reads (baselines aside)."""
        return min(self.lo, self.nd_lo)

    def needs(self) -> Needs:
        values = {(v.rule.metric, v.rule.column) for v in self.variants}
        values |= {(v.rule.metric, "mean") for v in self.variants
                   if isinstance(v.rule, StuckRule)}
        for v in self.variants:
            if isinstance(v.rule, ThresholdRule) and v.rule.baseline is not None \
                    and v.rule.baseline.expected is not None:
                values |= {(x, v.rule.column) for x in v.rule.baseline.expected.inputs}
                values |= {(x, FLAT) for x in frozen_watch(v.rule)}
            values |= {(x, FLAT) for x in machine_watch(v.rule)}
        if any(v.rule.running_only for v in self.variants) \
                or any(isinstance(r, OfflineRule) for r in self.no_data):
            values.add(SPEED)
        return Needs(tuple(sorted(values)), tuple(sorted({v.rule.metric for v in self.variants})),
                     tuple(sorted({r.metric for r in self.no_data}, key=lambda m: m or "")))

    def baseline_needs(self) -> Needs:
        """What computing the baselines from the aggregates reads."""
        metrics: set[str] = set()
        flat: set[str] = set()
        for key, _ in self.baselines:
            if "#" in key:
                metric, inputs, _, _, _ = parse_model(key)
                metrics |= {metric, *inputs}
                flat |= set(_watched((metric, *inputs)))
            else:
                metrics.add(key)
        return Needs(tuple(sorted({(m, "mean") for m in metrics} | {(m, FLAT) for m in flat}
                                  | {SPEED})), (), ())

    def baseline_history_start(self) -> datetime:
        """The first hour whose 1h means enter a baseline of the evaluated days."""
        back = max(d for _, d in self.baselines) + 1
        return midnight(self.lo.date() - timedelta(days=back))


def plan(rule_set: RuleSet, start: datetime, end: datetime,
         lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> Plan:
    """The evaluation of ``rule_set`` over the hours ``[start, end]`` (UTC, inclusive)."""
    start, end = hour_of(start), hour_of(end)
    if end < start:
        raise InputError(f"end {end.isoformat()} is before start {start.isoformat()}")
    variants = variants_of(rule_set)
    nd = no_data_rules(rule_set)
    lo = history_start(variants, start, lookback_hours) if variants else start
    nd_lo = start
    if nd:
        span = max(r.critical_after_hours or r.warning_after_hours for r in nd) + lookback_hours
        nd_lo = start - timedelta(hours=span)
    bases = sorted({(key, d) for v in variants if (d := v.baseline_days) is not None
                    for key in v.baseline_keys})
    return Plan(variants, nd, start, end, lo, nd_lo, lookback_hours, tuple(bases))


# --- baselines ------------------------------------------------------------------------------

def daily_baselines(grid: Grid, metric: str, days: int, first_day: date,
                    last_day: date) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's baseline of ``metric`` for the UTC days ``first_day .. last_day``.

    Day D's baseline is the median of the running hours' 1h means of days D-(days+1) .. D-2
    (NaN under 24 such hours), interpolated as PostgreSQL's ``percentile_cont(0.5)``:
    ``lo + (hi - lo) * 0.5``. The grid must start at a midnight at least ``days + 1`` days
    before ``first_day``. Returns (medians, hours counted), each (days x units).
    """
    day0 = grid.t0.date()
    if grid.t0 != midnight(day0) or (first_day - day0).days < days + 1:
        raise ValueError("the grid does not hold the baseline windows")
    units = grid.units.n
    n_days = (last_day - day0).days
    x = _running_means(grid, metric, n_days)
    # (unit, day, hour), each day's hours sorted (NaN last): a window is then a run of sorted
    # days, which the stable (merging) sort exploits.
    daily = np.sort(np.ascontiguousarray(x.T).reshape(units, n_days, 24), axis=2)
    out_days = (last_day - first_day).days + 1
    med = np.full((out_days, units), _NAN)
    count = np.zeros((out_days, units), dtype=np.int64)
    for i in range(out_days):
        d = (first_day - day0).days + i
        window = np.sort(daily[:, d - (days + 1):d - 1, :].reshape(units, -1), axis=1,
                         kind="stable")
        n = np.count_nonzero(~np.isnan(window), axis=1)
        lo = np.take_along_axis(window, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(window, (n // 2)[:, None].clip(max=window.shape[1] - 1),
                                axis=1)[:, 0]
        m = np.where(n % 2 == 1, lo, lo + (hi - lo) * 0.5)
        med[i] = np.where(n >= 24, m, _NAN)
        count[i] = n
    return med, count


def _running_means(grid: Grid, metric: str, n_days: int) -> np.ndarray:
    """The running hours' 1h means of ``metric`` over the grid's first ``n_days`` days."""
    x = np.full((n_days * 24, grid.units.n), _NAN)
    take = min(grid.hours, n_days * 24)
    x[:take] = np.where(grid.running()[:take], grid.values[(metric, "mean")][:take], _NAN)
    return x


#: Spread (fraction of the input's level; in log space, a fraction) below which an input of a
#: model is treated as constant: a fixed-speed unit's speed noise must not be fitted as a
#: cause of its flow. A ridge term of this size per input keeps such slopes near zero.
_MODEL_FLOOR = 0.005


def daily_model(grid: Grid, metric: str, inputs: tuple[str, ...], log: bool, days: int,
                first_day: date, last_day: date, proportional: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's expected-value model of ``metric`` for the days ``first_day .. last_day``.

    Day D's model is fitted on the running hours of days D-(days+1) .. D-2 at which the metric
    and every input have a 1h mean and none of them, nor a channel either is computed from,
    was frozen (4-hour standard deviation zero, when the grid holds it: a stuck transmitter
    would teach the model a relation the machine does not have; logarithms with ``log``;
    non-positive values left out):
    least-squares slopes on the centred inputs (a small ridge, :data:`_MODEL_FLOOR`, keeps
    an input that hardly moved from getting a slope), and as intercept the median residual,
    so a few unusual hours do not move it; with ``proportional`` the slope is one (the metric
    moves in proportion to its one input) and only the intercept is fitted, which a few
    days of a steady input already fix. Returns (coefficients: intercept then slopes,
    each days x units; NaN under 24 hours) and the hours used (days x units).
    """
    day0 = grid.t0.date()
    if grid.t0 != midnight(day0) or (first_day - day0).days < days + 1:
        raise ValueError("the grid does not hold the baseline windows")
    units, k = grid.units.n, len(inputs)
    n_days = (last_day - day0).days
    series = [_running_means(grid, m, n_days) for m in (metric, *inputs)]
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            series = [np.where(a > 0, np.log(a), _NAN) for a in series]
    stack = np.stack(series)                      # (1 + k, hours, units)
    valid = ~np.isnan(stack).any(axis=0)
    for name in _watched((metric, *inputs)):
        flat = grid.values.get((name, FLAT))
        if flat is not None:
            take = min(grid.hours, n_days * 24)
            valid[:take] &= flat[:take] != 0.0
    out_days = (last_day - first_day).days + 1
    coef = np.full((k + 1, out_days, units), _NAN)
    count = np.zeros((out_days, units), dtype=np.int64)
    for i in range(out_days):
        d = (first_day - day0).days + i
        rows = slice((d - (days + 1)) * 24, (d - 1) * 24)
        ok = valid[rows]
        n = ok.sum(axis=0)
        w = np.where(ok, stack[:, rows], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = w.sum(axis=1) / n                              # (1 + k, units)
            c = np.where(ok, stack[:, rows] - mean[:, None, :], 0.0)
            xx = np.einsum("ihu,jhu->uij", c[1:], c[1:])          # (units, k, k)
            xy = np.einsum("ihu,hu->ui", c[1:], c[0])             # (units, k)
            floor = _MODEL_FLOOR * (np.ones_like(mean[1:]) if log
                                    else np.maximum(np.abs(mean[1:]), 1.0))
            ridge = (n[:, None] * (floor.T ** 2))                 # (units, k)
            a = xx + np.einsum("ui,ij->uij", ridge, np.eye(k))
            fit = n >= 24
            slopes = np.full((units, k), _NAN)
            if proportional:    # the slope is one: only the factor (the intercept) is fitted
                slopes[fit] = 1.0
            elif fit.any():
                slopes[fit] = np.linalg.solve(a[fit], xy[fit][..., None])[..., 0]
            resid = stack[0, rows] - np.einsum("uk,khu->hu", slopes, stack[1:, rows])
            resid = np.where(ok, resid, _NAN)
            intercept = np.full(units, _NAN)
            if fit.any():
                intercept[fit] = np.nanmedian(resid[:, fit], axis=0)
        coef[0, i] = intercept
        coef[1:, i] = slopes.T
        count[i] = n
    return coef, count


def baseline_values(grid: Grid, key: str, days: int, first_day: date, last_day: date,
                    fits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One baseline value per unit and day (a median, or a model component, see
    :func:`baseline_keys`) and the running hours behind it; ``fits`` caches a model's fit
    across its components."""
    if "#" not in key:
        return daily_baselines(grid, key, days, first_day, last_day)
    metric, inputs, log, proportional, component = parse_model(key)
    cache = fits if fits is not None else {}
    name = f"{key.rsplit('#', 1)[0]}/{days}"
    if name not in cache:
        cache[name] = daily_model(grid, metric, inputs, log, days, first_day, last_day,
                                  proportional)
    coef, count = cache[name]
    return coef[component], count


def expected_baseline(rule: ThresholdRule, grid: Grid,
                      bases: dict[tuple[str, int], np.ndarray]) -> np.ndarray | None:
    """The rule's baseline per grid hour: the median, or its model at each hour's inputs;
    NaN where the window held fewer than ``min_hours`` running hours, and for a model where
    the metric or an input was flat (stuck) over the last 4 hours."""
    spec = rule.baseline
    if spec is None:
        return None
    keys = baseline_keys(rule.metric, spec.expected)
    count = bases[(count_key(keys[0]), spec.days)]
    if spec.expected is None:
        base = bases[(keys[0], spec.days)]
    else:
        base = bases[(keys[0], spec.days)].copy()
        for key, name in zip(keys[1:], spec.expected.inputs, strict=True):
            x = grid.values[(name, rule.column)]
            if spec.expected.log:
                with np.errstate(invalid="ignore", divide="ignore"):
                    x = np.where(x > 0, np.log(x), _NAN)
            base += bases[(key, spec.days)] * x
        if spec.expected.log:
            base = np.exp(base)
        # A stuck metric or input says nothing about the machine: no expectation then.
        stuck = frozen(grid, frozen_watch(rule))
        if stuck is not None:
            base = np.where(stuck, _NAN, base)
    with np.errstate(invalid="ignore"):
        return np.where(count >= spec.min_hours, base, _NAN)


def hourly(by_day: np.ndarray, first_day: date, grid: Grid) -> np.ndarray:
    """A (days x units) array of day values spread over the grid's hours (NaN outside)."""
    day_of = ((np.arange(grid.hours) + grid.t0.hour) // 24
              + (grid.t0.date() - first_day).days)
    ok = (day_of >= 0) & (day_of < by_day.shape[0])
    out = np.full((grid.hours, grid.units.n), _NAN)
    out[ok] = by_day[day_of[ok]]
    return out


# --- level rules ----------------------------------------------------------------------------

def _offset(level: Level, base: np.ndarray | None) -> np.ndarray | float | None:
    parts: list[np.ndarray | float] = []
    if level.delta is not None:
        parts.append(float(level.delta))
    if level.percent is not None:
        assert base is not None
        parts.append(float(level.percent) / 100.0 * np.abs(base))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else np.fmin(parts[0], parts[1])


def _limit(level: Level, cmp: str, base: np.ndarray | None) -> np.ndarray | float:
    """The level as a value for ``above``/``below`` (whichever of absolute/relative first)."""
    off = _offset(level, base)
    rel = None
    if off is not None:
        assert base is not None
        rel = base + off if cmp == "above" else base - off
    if level.absolute is None:
        assert rel is not None
        return rel
    if rel is None:
        return float(level.absolute)
    return (np.fmin if cmp == "above" else np.fmax)(float(level.absolute), rel)


def _beyond(level: Level, cmp: str, v: np.ndarray, base: np.ndarray | None,
            normal: bool = False) -> np.ndarray:
    """'v is beyond ``level``' (with ``normal``: strictly on the normal side); NaN: False."""
    if cmp == "either":
        off = _offset(level, base)
        assert off is not None and base is not None
        dev = np.abs(v - base)
        return np.asarray(dev < off if normal else dev >= off)
    lim = _limit(level, cmp, base)
    if cmp == "above":
        return np.asarray(v < lim if normal else v >= lim)
    return np.asarray(v > lim if normal else v <= lim)


def _threshold(level: Level | None, cmp: str, v: np.ndarray,
               base: np.ndarray | None) -> np.ndarray | float:
    """The threshold reported with a breach at this level."""
    if level is None:
        return _NAN
    if cmp != "either":
        return _limit(level, cmp, base)
    off = _offset(level, base)
    assert off is not None and base is not None
    with np.errstate(invalid="ignore"):
        return np.where(v >= base, base + off, base - off)


def _lag(c: np.ndarray, n: int) -> np.ndarray:
    """``c`` shifted ``n`` hours later along the hour axis, zero-filled."""
    out = np.zeros_like(c)
    if n < c.shape[0]:
        out[n:] = c[:c.shape[0] - n]
    return out


def in_scope(v: Variant | NoDataRule, units: Units) -> np.ndarray:
    """Which units a variant (or a no-data rule) applies to."""
    model = np.array(units.models, dtype=object)
    keep = np.ones(units.n, dtype=bool)
    scope = v.rule.applies_to if isinstance(v, Variant) else v.applies_to
    if isinstance(v, Variant) and v.model is not None:
        keep &= model == v.model
    else:
        models = v.models if isinstance(v, Variant) else scope.models
        if models is not None:
            keep &= np.isin(model, list(models))
        if isinstance(v, Variant) and v.except_models:
            keep &= ~np.isin(model, list(v.except_models))
    if scope.sites is not None:
        keep &= np.isin(np.array(units.sites, dtype=object), list(scope.sites))
    if scope.orgs is not None and units.org_id not in scope.orgs:
        keep[:] = False
    if isinstance(v, OfflineRule):
        keep &= units.carry(v.metric)
    return keep


@dataclass
class _State:
    """One variant's per-hour flags over the grid hours ``lo ..`` (units in scope only)."""

    units: np.ndarray          # grid columns of the units in scope
    pres: np.ndarray
    val: np.ndarray
    bf: np.ndarray
    firing: np.ndarray
    crit: np.ndarray
    clear: np.ndarray
    undecided: np.ndarray      # would clear, given a breach before the grid's history
    f_thr: np.ndarray | float
    c_thr: np.ndarray | float


def _state(v: Variant, grid: Grid, running: np.ndarray | None,
           bases: dict[tuple[str, int], np.ndarray], p: Plan) -> _State | None:
    units = np.nonzero(in_scope(v, grid.units))[0]
    if units.size == 0:
        return None
    lo_j = grid.j(p.lo)
    rule, cmp = v.rule, v.rule.comparison
    cols = slice(None) if units.size == grid.units.n else units
    pres = grid.present[rule.metric][lo_j:, cols]
    val = grid.values[(rule.metric, rule.column)][lo_j:, cols]
    if rule.running_only:
        assert running is not None
        val = np.where(running[lo_j:, cols], val, _NAN)
    if isinstance(rule, StuckRule):
        cp = np.cumsum(pres, axis=0, dtype=np.int32)
        val = np.where(cp - _lag(cp, STUCK_WINDOW) >= STUCK_WINDOW, val, _NAN)
    else:
        # A frozen transmitter fires no machine rule: the stuck notice speaks for it. Unlike
        # the notice, the hour needs no row in each hour of the flat window: leaving out a
        # live reading that happened to repeat after a gap delays a machine alert an hour at
        # most, and the hour's verdict then reads that hour alone (no older history).
        stuck = frozen(grid, machine_watch(rule))
        if stuck is not None:
            val = np.where(stuck[lo_j:, cols], _NAN, val)
    full = expected_baseline(rule, grid, bases) if isinstance(rule, ThresholdRule) else None
    base = full[lo_j:, cols] if full is not None else None
    with np.errstate(invalid="ignore"):
        has_v = ~np.isnan(val)
        bf = _beyond(v.first, cmp, val, base)
        bc = (_beyond(v.critical, cmp, val, base) if v.critical is not None
              else np.zeros_like(bf))
        normal = _beyond(v.clear, cmp, val, base, normal=True)
        nr, band = has_v & normal, has_v & ~normal
        f_thr = _threshold(v.first, cmp, val, base)
        c_thr = _threshold(v.critical, cmp, val, base)
    cbf, cbc = np.cumsum(bf, axis=0, dtype=np.int32), np.cumsum(bc, axis=0, dtype=np.int32)
    cnr, cband = np.cumsum(nr, axis=0, dtype=np.int32), np.cumsum(band, axis=0, dtype=np.int32)
    m, n, k = v.m, v.n, v.k
    fire_cnt, crit_cnt = cbf - _lag(cbf, m), cbc - _lag(cbc, m)
    norm_cnt = cnr - _lag(cnr, k)
    recent_bf = cbf - _lag(cbf, p.span + 1)
    band_cnt = cband - _lag(cband, k + 1)
    prev_pres = np.zeros_like(pres)
    prev_pres[1:] = pres[:-1]
    prev_cleared = prev_pres & (_lag(cnr, 1) - _lag(cnr, k + 1) >= k)
    firing = (fire_cnt >= n) & (norm_cnt < k)
    crit = crit_cnt >= n
    ending = (norm_cnt >= k) & ~prev_cleared
    clear = ending & ((recent_bf > 0) | (band_cnt > 0))
    undecided = pres & ending & (recent_bf == 0) & (band_cnt == 0)
    return _State(units, pres, val, bf, firing, crit, clear, undecided, f_thr, c_thr)


def _variant_rows(v: Variant, grid: Grid, running: np.ndarray | None,
                  bases: dict[tuple[str, int], np.ndarray], p: Plan,
                  hours: list[datetime]) -> list[Row]:
    """The firing and clearing rows of one variant (one column per unit in scope)."""
    st = _state(v, grid, running, bases, p)
    if st is None:
        return []
    lo_j, start_j = grid.j(p.lo), grid.j(p.start)
    rule, cmp, m = v.rule, v.rule.comparison, v.m
    units, val, bf, firing, crit, clear = st.units, st.val, st.bf, st.firing, st.crit, st.clear
    out = st.pres & (firing | clear)
    out[:start_j - lo_j] = False
    tj, ui = np.nonzero(out)
    if ui.size == 0:
        return []
    if cmp == "either":
        worst_at = val[tj, ui]
    else:   # the worst value beyond the first level in the persistence window
        fill = -np.inf if cmp == "above" else np.inf
        bfv = np.where(bf, val, fill)
        pick = np.maximum if cmp == "above" else np.minimum
        worst_at = bfv[tj, ui]
        for s in range(1, m):
            worst_at = np.where(tj >= s, pick(worst_at, bfv[np.maximum(tj - s, 0), ui]),
                                worst_at)
        worst_at = np.where(np.isinf(worst_at), _NAN, worst_at)
    fi, cr, cl = firing[tj, ui], crit[tj, ui], clear[tj, ui]
    value = np.where(fi, worst_at, val[tj, ui])
    f_at = np.broadcast_to(st.f_thr, val.shape)[tj, ui]
    c_at = np.broadcast_to(st.c_thr, val.shape)[tj, ui]
    thr = np.where(cr, c_at, f_at)
    if isinstance(rule, StuckRule):     # the frozen reading, not its zero spread
        value = grid.values[(rule.metric, "mean")][tj + lo_j, units[ui]]
        thr = np.full_like(value, _NAN)
    comps, sites = grid.units.ids, grid.units.sites
    return [Row(rule.id, rule.metric, comps[u], sites[u], hours[t], x if x == x else None,
                f, c, th if th == th else None, e)
            for u, t, x, f, c, th, e in zip(units[ui].tolist(), (tj + lo_j).tolist(),
                                            value.tolist(), fi.tolist(), cr.tolist(),
                                            thr.tolist(), cl.tolist(), strict=True)]


def _no_data_rows(r: NoDataRule, grid: Grid, running: np.ndarray | None, p: Plan,
                  hours: list[datetime]) -> list[Row]:
    """One no-data rule: hours since the last aggregate with readings (counted from the hour
    before ``nd_lo`` when there is none), and a Clear at the first hour data is back. An
    offline rule counts only the running hours of that silence and fires at running hours."""
    units = np.nonzero(in_scope(r, grid.units))[0]
    if units.size == 0:
        return []
    lo_j, start_j, end_j = grid.j(p.nd_lo), grid.j(p.start), grid.j(p.end)
    has = grid.data[r.metric][lo_j:end_j + 1, units]
    idx = np.arange(has.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(has, idx, -1), axis=0)    # -1: none yet
    prev = np.full_like(last, -1)
    prev[1:] = last[:-1]
    gap = idx - last
    prev_gap = idx - prev - 1
    run: np.ndarray | None = None
    if isinstance(r, OfflineRule):
        assert running is not None
        run = running[lo_j:end_j + 1, units]
        silent = np.cumsum(run & ~has, axis=0, dtype=np.int64)
        at = np.take_along_axis(silent, np.maximum(last, 0), axis=0)
        gap = silent - np.where(last >= 0, at, 0)        # running hours since the last data
        prev_gap = np.zeros_like(gap)
        prev_gap[1:] = gap[:-1]
    warn, crit = r.warning_after_hours, r.critical_after_hours
    firing = gap >= warn
    if run is not None:
        firing &= run
    is_crit = gap >= crit if crit is not None else np.zeros_like(firing)
    clear = has & (prev_gap >= warn)
    out = firing | clear
    out[:start_j - lo_j] = False
    tj, ui = np.nonzero(out)
    metric = r.metric or "*"
    comps, sites = grid.units.ids, grid.units.sites
    return [Row(r.id, metric, comps[u], sites[u], hours[t], float(g), f, c,
                float(crit if c and crit is not None else warn), e)
            for u, t, g, f, c, e in zip(units[ui].tolist(), (tj + lo_j).tolist(),
                                        gap[tj, ui].tolist(), firing[tj, ui].tolist(),
                                        is_crit[tj, ui].tolist(), clear[tj, ui].tolist(),
                                        strict=True)]


def history_dependent(p: Plan, grid: Grid, bases: dict[tuple[str, int], np.ndarray]
                      ) -> np.ndarray:
    """Units whose rows at ``end`` (a one-hour plan) may depend on hours before the last
    :attr:`Plan.recent_hours`, judged on a grid that has those older hours empty.

    Every count of a level rule at ``end`` looks at the recent hours only, except the breach
    evidence of a Clear: a unit that would clear there but has no breach or band hour among
    the recent hours is undecided. A no-data rule's gap is 0 now and an hour ago for a unit
    with readings at both hours (no row); any other unit in scope is undecided.
    """
    if p.start != p.end:
        raise ValueError("only a one-hour plan has recent hours")
    deep = np.zeros(grid.units.n, dtype=bool)
    running = grid.running() if SPEED in grid.values else None
    for v in p.variants:
        st = _state(v, grid, running, bases, p)
        if st is not None:
            deep[st.units[st.undecided[-1]]] = True
    e = grid.j(p.end)
    for r in p.no_data:
        seen = grid.data[r.metric]
        quiet = ~(seen[e] & seen[e - 1])
        if isinstance(r, OfflineRule):   # stopped and silent now: no row, whatever came before
            assert running is not None
            quiet &= running[e] | seen[e]
        deep |= in_scope(r, grid.units) & quiet
    return deep


def _map(fn: Callable[..., T], items: Iterable[object], threads: int) -> list[T]:
    if threads <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(threads) as pool:   # numpy releases the GIL in ufuncs and sorts
        return list(pool.map(fn, items))


def evaluate_grid(p: Plan, grid: Grid, bases: dict[tuple[str, int], np.ndarray],
                  threads: int = 1) -> list[Row]:
    """Every firing and clearing row of the plan's hours, ordered by hour, unit and rule.

    ``grid`` holds the plan's needs from at least :attr:`Plan.first_hour` to ``end``;
    ``bases``: per (key, days) of the plan, each hour's baseline value (grid-shaped), and
    under (:func:`count_key`, days) the running hours behind it.
    """
    if grid.t0 > p.first_hour or grid.j(p.end) != grid.hours - 1:
        raise ValueError("the grid does not cover the plan's hours")
    hours = [grid.t0 + timedelta(hours=i) for i in range(grid.hours)]
    running = grid.running() if SPEED in grid.values else None
    out: list[Row] = []
    for part in _map(lambda v: _variant_rows(v, grid, running, bases, p, hours),
                     p.variants, threads):
        out += part
    for r in p.no_data:
        out += _no_data_rows(r, grid, running, p, hours)
    out.sort(key=row_order)
    return out


__all__ = ["DEFAULT_LOOKBACK_HOURS", "Grid", "Needs", "Plan", "Row", "Units", "Variant",
           "baseline_keys", "baseline_values", "count_key", "daily_baselines", "daily_model",
           "evaluate_grid", "expected_baseline", "frozen", "history_dependent", "history_start",
           "hour_of", "hourly", "in_scope", "model_key", "parse_model", "plan", "variants_of"]
