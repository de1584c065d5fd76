"""The rule schema: what a rule file may say, as frozen pydantic models.

Every model forbids unknown keys (a mistyped ``critcal:`` must fail, not vanish) and uses strict
scalar types (a quoted ``"350"`` is a mistake, not a number). Cross-field checks that need the
whole rule (warning beyond critical, hysteresis on the wrong side) live in :func:`check_rule`,
which returns key paths so the loader can point at the offending line.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    model_validator,
)

from altaviz.core.telemetry import METRIC_BY_NAME

#: A unit counts as running (steadily) at an hour when its slowest 10-minute speed over the
#: last 4 hours reached this share of its rated speed (compressors.rated_rpm). (proposed)
RUNNING_SHARE = 0.5

#: Running hours a baseline window must hold before relative levels may fire: three days.
#: (proposed; backtest in docs/BENCHMARKS.md, "Rules: scored against a field-like fleet")
BASELINE_MIN_HOURS = 72

#: Window name -> suffix of the ``sensor_readings_agg`` columns holding it.
WINDOW_SUFFIX: dict[str, str] = {"1h": "", "4h": "_4h", "24h": "_24h"}

Window = Literal["1h", "4h", "24h"]
Aggregate = Literal["mean", "min", "max", "stddev"]
Comparison = Literal["above", "below", "either"]


def _number(value: Any) -> Any:
    """Numbers only: YAML ``"350"`` or ``yes`` is a typo, not a threshold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number (got {value!r})")
    return float(value)


Number = Annotated[float, BeforeValidator(_number)]


def _known_metric(name: str) -> str:
    if name not in METRIC_BY_NAME:
        examples = ", ".join(sorted(METRIC_BY_NAME)[:4])
        raise ValueError(f"unknown metric {name!r} (expected a metric of the telemetry "
                         f"contract, altaviz/core/telemetry.py, e.g. {examples}, ...)")
    return name


def _known_model(name: str, info: ValidationInfo) -> str:
    """A model of the catalog the rule file is loaded against (the loader passes
    ``context={"models": ...}``), so a typo cannot silently match nothing. Without that
    context (a rule set read back from the database) names were checked when it was loaded."""
    models = (info.context or {}).get("models")
    if models is not None and name not in models:
        raise ValueError(f"unknown model {name!r} (models in the catalog: "
                         f"{', '.join(sorted(models))}; add it to the file of the setting "
                         "MODEL_CATALOG_FILE)")
    return name


MetricName = Annotated[StrictStr, AfterValidator(_known_metric)]
ModelName = Annotated[StrictStr, AfterValidator(_known_model)]
RuleId = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Level(_Model):
    """One threshold: absolute, relative to the unit's baseline, or both.

    The relative offset is ``min(delta, percent% of |baseline|)`` over the parts given; with an
    absolute value too, whichever is reached first fires (for ``above`` the lower of the two).
    """

    absolute: Number | None = None
    delta: Annotated[Number, Field(gt=0)] | None = None
    percent: Annotated[Number, Field(gt=0, le=100)] | None = None

    @property
    def relative(self) -> bool:
        """Whether the level needs the unit's baseline."""
        return self.delta is not None or self.percent is not None


def _level(value: Any) -> Any:
    """A bare number in YAML means an absolute threshold."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"absolute": value}
    return value


LevelSpec = Annotated[Level, BeforeValidator(_level)]


class Persistence(_Model):
    """Fire only when the condition held in ``hours`` of the last ``of`` hours."""

    hours: Annotated[StrictInt, Field(ge=1, le=24)] = 1
    of: Annotated[StrictInt, Field(ge=1, le=24)] = 1


class Expected(_Model):
    """Measured against expected (DOMAIN.md, "Normal operating variation"): per unit and day, a
    least-squares fit over the baseline window's running hours of the metric's 1h means on
    the ``inputs``' 1h means; the baseline at an hour is the fit evaluated at that hour's
    inputs (the rule's aggregate and window), its intercept the median residual. ``log``:
    fit logarithms (a product of powers, as flow is of speed and pressures). An hour whose
    inputs are missing has no baseline: neither beyond nor normal.
    """

    inputs: Annotated[tuple[MetricName, ...], Field(min_length=1, max_length=3)]
    log: StrictBool = False
    #: The metric moves in proportion to its one input (``log`` with a slope of one): only the
    #: factor is fitted, the median of metric / input over the window. For quantities the
    #: physics ties together, such as neighbouring stages' pressure ratios, whose fitted slope
    #: is unreliable while the input has hardly moved.
    proportional: StrictBool = False


class Baseline(_Model):
    """The unit's own normal: the median of its 1h means over ``days`` full UTC days, ending
    one full day before the evaluated hour's day (so the last 24 to 48 hours never count).

    ``min_hours``: running hours the window must hold before the relative levels may fire; a
    baseline of one day's running is a guess, and a unit fresh from a stop or a shut-in has not
    yet shown its normal. ``expected``: judge the value against what the unit should show
    under the present conditions instead of against a flat median (see :class:`Expected`).
    """

    days: Annotated[StrictInt, Field(ge=1, le=30)] = 7
    min_hours: Annotated[StrictInt, Field(ge=24, le=720)] = BASELINE_MIN_HOURS
    expected: Expected | None = None


class AppliesTo(_Model):
    """Scope: every listed criterion must match; an omitted one matches everything."""

    models: tuple[ModelName, ...] | None = None
    sites: tuple[StrictStr, ...] | None = None
    orgs: tuple[StrictStr, ...] | None = None


class LevelsOverride(_Model):
    """Per-model replacement thresholds (only the keys given change)."""

    warning: LevelSpec | None = None
    critical: LevelSpec | None = None
    clear: LevelSpec | None = None


class ForecastOption(_Model):
    """A rule's failure forecast (rules/forecast.py): how its critical level is named in the
    sentence ("reaches 350 F (shutdown)") and, optionally, a warning of its own while the
    forecast to critical is under ``warn_within_hours`` (rule id ``<rule>_forecast``), so a
    fast-rising metric can page before it crosses a fixed threshold."""

    enabled: StrictBool = True
    limit_name: Annotated[StrictStr, Field(min_length=1, max_length=40)] = "critical"
    warn_within_hours: Annotated[Number, Field(gt=0, le=720)] | None = None


class _RuleBase(_Model):
    id: RuleId
    metric: MetricName
    diagnosis: Annotated[StrictStr, Field(min_length=1)]
    checks: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    basis: Annotated[StrictStr, Field(min_length=1)]
    escalation_delay_hours: Annotated[Number, Field(gt=0, le=168)] = 4.0
    applies_to: AppliesTo = AppliesTo()
    enabled: StrictBool = True
    #: Rules this one explains while it fires on a unit: their breaches of the same unit at
    #: the same hour open no alert (e.g. a stopped unit's flow and data alerts). Checked
    #: against the set's rule ids when the file is loaded.
    inhibits: tuple[RuleId, ...] = ()


class _LevelRule(_RuleBase):
    comparison: Comparison
    warning: LevelSpec | None = None
    critical: LevelSpec | None = None
    clear: LevelSpec | None = None
    persistence: Persistence = Persistence()
    clear_after_hours: Annotated[StrictInt, Field(ge=1, le=24)] = 2
    models: dict[ModelName, LevelsOverride] = {}
    #: Judge only hours in which the unit has run for the last 4 hours (``speed_rpm`` min_4h
    #: at least RUNNING_SHARE of its rated speed). A stopped or warming-up unit has no steady
    #: flow, oil pressure, temperatures or ratios: those hours neither breach nor count as
    #: normal (like missing data). Without this, start/stop cycles make many false alerts
    #: (a backtest of the simulated fleet, bench/bench_scale.py fleet-30d, counts them).
    running_only: StrictBool = True
    #: Failure forecast options (rules/forecast.py); absent: forecast to "critical", no
    #: forecast-driven warning.
    forecast: ForecastOption | None = None

    def levels_for(self, model: str | None) -> tuple[Level | None, Level | None, Level]:
        """Warning, critical and clear levels for a model (clear defaults to warning, or
        critical when there is no warning: no hysteresis band)."""
        o = self.models.get(model) if model is not None else None
        warning = o.warning if o is not None and o.warning is not None else self.warning
        critical = o.critical if o is not None and o.critical is not None else self.critical
        clear = o.clear if o is not None and o.clear is not None else self.clear
        first = warning if warning is not None else critical
        assert first is not None  # check_rule guarantees one
        return warning, critical, clear if clear is not None else first


class ThresholdRule(_LevelRule):
    """A level on one aggregate of one metric, absolute and/or relative to a baseline."""

    kind: Literal["threshold"]
    aggregate: Aggregate = "mean"
    window: Window = "1h"
    baseline: Baseline | None = None

    @property
    def column(self) -> str:
        """The ``sensor_readings_agg`` column compared with the thresholds."""
        return self.aggregate + WINDOW_SUFFIX[self.window]


class RateOfChangeRule(_LevelRule):
    """A level on the change of the 1h mean per hour (``rate_of_change``), absolute only."""

    kind: Literal["rate_of_change"]

    @property
    def column(self) -> str:
        """The ``sensor_readings_agg`` column compared with the thresholds."""
        return "rate_of_change"


#: A stuck rule's keys that follow from ``unchanged_hours`` (see :class:`StuckRule`).
_STUCK_FIXED = ("comparison", "aggregate", "window", "warning", "critical", "clear",
                "persistence", "clear_after_hours", "running_only", "baseline", "models",
                "forecast")


class StuckRule(ThresholdRule):
    """A transmitter frozen on one value while the unit runs: a data-quality notice to the
    technician ("stage 2 suction pressure reads 263 psig unchanged for 6 hours"), never a
    machine alert, and while it lasts the expected-value rules reading the channel have no
    expectation (rules/engine.py, ``frozen_watch``).

    Evaluated as the threshold rule it implies, so the engine has one implementation of
    persistence and clearing: the 4-hour standard deviation of the metric at zero (a live
    transmitter on a running unit always moves at its reported resolution; a quantized value
    repeats for about an hour at most, etl/quality.py) for ``unchanged_hours - 3`` running
    hours in a row (the first flat 4-hour window already holds 4 unchanged hours), cleared by
    the first hour it moves. The breach's value is the frozen reading (the hour's mean), not
    the standard deviation, and it has no threshold.
    """

    kind: Literal["stuck"]  # type: ignore[assignment]
    unchanged_hours: Annotated[StrictInt, Field(ge=5, le=24)] = 6

    @model_validator(mode="before")
    @classmethod
    def _implied(cls, data: Any) -> Any:
        """Fill the threshold keys ``unchanged_hours`` implies; refuse others given for them
        (a rule read back from the database carries the same values, which pass)."""
        if not isinstance(data, dict):
            return data
        hours = data.get("unchanged_hours", 6)
        if isinstance(hours, bool) or not isinstance(hours, int):
            return data     # the field's own validation reports it
        n = min(max(hours - 3, 1), 24)
        fixed: dict[str, Any] = {
            "comparison": "below", "aggregate": "stddev", "window": "4h",
            "warning": Level(absolute=0.0), "critical": None, "clear": None,
            "persistence": Persistence(hours=n, of=n), "clear_after_hours": 1,
            "running_only": True, "baseline": None, "models": {}, "forecast": None}
        for key in _STUCK_FIXED:
            if key not in data:
                continue
            given, want = data[key], fixed[key]
            if isinstance(want, Level) and given is not None:
                given = Level.model_validate(_level(given))
            elif isinstance(want, Persistence) and isinstance(given, dict):
                given = Persistence.model_validate(given)
            if given != want and not (want == {} and given is None):
                raise ValueError(f"a stuck rule sets {key!r} itself (from unchanged_hours); "
                                 "leave it out")
        return {**data, **fixed}


class NoDataRule(_RuleBase):
    """A compressor (or one of its metrics) whose hourly aggregates stop arriving.

    Missing data is never "back to normal": threshold rules neither fire nor clear on hours
    without data; this rule is what notices the silence.
    """

    kind: Literal["no_data"]
    metric: MetricName | None = None  # type: ignore[assignment]
    warning_after_hours: Annotated[StrictInt, Field(ge=1, le=720)]
    critical_after_hours: Annotated[StrictInt, Field(ge=1, le=720)] | None = None


class OfflineRule(NoDataRule):
    """One channel a unit carries (``compressors.channels``) that has sent no reading for
    ``warning_after_hours`` hours while the unit ran: a data-quality ("sensor offline") notice
    to the technician ("oil pressure has sent no reading for 3 hours while running"), never a
    machine alert.

    Evaluated as the no-data rule it narrows, so the engine has one implementation of the
    silence: only hours in which the unit ran steadily (the running gate of the level rules)
    count, hours stopped neither count nor end the silence, it fires only at a running hour
    and it clears at the first hour with a reading. A unit that does not carry the channel
    (a stage it lacks, the jacket water of an integral engine) is never judged, and a unit
    whose gateway is silent has no speed, so no running hours: the data-missing rule speaks.
    """

    kind: Literal["offline"]  # type: ignore[assignment]
    metric: MetricName
    warning_after_hours: Annotated[StrictInt, Field(ge=1, le=24)]
    critical_after_hours: Annotated[StrictInt, Field(ge=1, le=24)] | None = None


Rule = ThresholdRule | StuckRule | RateOfChangeRule | NoDataRule | OfflineRule
LevelRule = ThresholdRule | RateOfChangeRule
RULE_CLASSES: dict[str, type[ThresholdRule] | type[RateOfChangeRule] | type[NoDataRule]] = {
    "threshold": ThresholdRule, "rate_of_change": RateOfChangeRule, "no_data": NoDataRule,
    "stuck": StuckRule, "offline": OfflineRule,
}
#: Rule kinds whose alerts are data-quality notices for the technician (the data or a sensor
#: is wrong), not news of the machine: scored apart from machine alerts by backtests.
NOTICE_KINDS: frozenset[str] = frozenset({"no_data", "stuck", "offline"})


def notice_rule_ids(rule_set: RuleSet) -> tuple[str, ...]:
    """The ids of the rules whose alerts are notices, not news of a machine going wrong:
    data-quality notices (:data:`NOTICE_KINDS`) and the stop rule's "unit down" notice (a
    rule that ``inhibits`` others; DOMAIN.md: a stop without a planned window deserves one
    notice). Backtests count them apart from false alerts and never as a fault caught."""
    return tuple(r.id for r in rule_set.rules if r.kind in NOTICE_KINDS or r.inhibits)

#: Keys an organization's override file may change; identity and meaning (id, kind, metric,
#: aggregate, window, comparison) stay those of the default set.
OVERRIDABLE_KEYS: frozenset[str] = frozenset({
    "warning", "critical", "clear", "persistence", "clear_after_hours", "escalation_delay_hours",
    "models", "applies_to", "enabled", "warning_after_hours", "critical_after_hours",
    "diagnosis", "checks", "baseline", "running_only", "forecast",
})


class RuleSet(_Model):
    """A validated, ordered set of rules; ``rule_set_id``/``version`` once stored."""

    org_id: str | None = None
    source: str
    rules: tuple[Annotated[Rule, Field(discriminator="kind")], ...]
    rule_set_id: int | None = None
    version: int | None = None

    def canonical(self) -> dict[str, Any]:
        """The content that identifies the set (what is hashed and stored)."""
        # ``inhibits``, ``forecast`` and a model's ``proportional`` only when given: sets
        # without them keep the hash they always had.
        def dump(r: Any) -> dict[str, Any]:
            unset = {k for k in ("inhibits", "forecast") if not getattr(r, k, None)}
            out: dict[str, Any] = r.model_dump(mode="json", exclude=unset or None)
            expected = (out.get("baseline") or {}).get("expected")
            if expected is not None and not expected.get("proportional"):
                del expected["proportional"]
            return out

        return {"org_id": self.org_id, "rules": [dump(r) for r in self.rules]}

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: identical content, identical hash."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id (KeyError if absent)."""
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)


# --- cross-field checks ------------------------------------------------------------------------

Problem = tuple[tuple[str | int, ...], str]


def _fmt(x: float) -> str:
    return f"{x:g}"


def _order(path: tuple[str | int, ...], inner: Level, outer: Level, cmp: Comparison,
           inner_name: str, outer_name: str, strict: bool) -> list[Problem]:
    """``inner`` must be reached before ``outer`` (e.g. warning before critical)."""
    problems: list[Problem] = []
    if inner.absolute is not None and outer.absolute is not None:
        a, b = inner.absolute, outer.absolute
        if cmp == "below":
            bad = a <= b if strict else a < b
            if bad:
                word = "above" if strict else "at or above"
                problems.append((path, f"must be {word} {outer_name} for a 'below' rule "
                                       f"(got {_fmt(a)} {'<=' if strict else '<'} {_fmt(b)})"))
        else:
            bad = a >= b if strict else a > b
            if bad:
                word = "below" if strict else "at or below"
                problems.append((path, f"must be {word} {outer_name} "
                                       f"(got {_fmt(a)} {'>=' if strict else '>'} {_fmt(b)})"))
    for part in ("delta", "percent"):
        a2, b2 = getattr(inner, part), getattr(outer, part)
        if a2 is not None and b2 is not None and (a2 >= b2 if strict else a2 > b2):
            problems.append(((*path, part), f"must be smaller than {outer_name}'s {part} "
                             f"(got {_fmt(a2)} {'>=' if strict else '>'} {_fmt(b2)})"))
    return problems


def _check_levels(rule: LevelRule, warning: Level | None, critical: Level | None,
                  clear: Level | None, prefix: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    if warning is None and critical is None:
        return [(prefix or ("warning",), "a rule needs a warning or a critical threshold")]
    for name, lvl in (("warning", warning), ("critical", critical), ("clear", clear)):
        if lvl is None:
            continue
        path = (*prefix, name)
        if lvl.absolute is None and not lvl.relative:
            problems.append((path, "expected absolute, delta or percent"))
        if lvl.relative and isinstance(rule, RateOfChangeRule):
            problems.append((path, "rate_of_change rules take absolute thresholds only"))
        if lvl.relative and isinstance(rule, ThresholdRule) and rule.baseline is None:
            problems.append((path, "delta/percent thresholds need a 'baseline:' on the rule"))
        if rule.comparison == "either" and (lvl.absolute is not None or not lvl.relative):
            problems.append((path, "'either' rules compare the deviation from the baseline: "
                                   "give delta and/or percent, not absolute"))
    if warning is not None and critical is not None:
        problems += _order((*prefix, "warning"), warning, critical, rule.comparison,
                           "warning", "critical", strict=True)
    first = warning if warning is not None else critical
    if clear is not None and first is not None:
        problems += _order((*prefix, "clear"), clear, first, rule.comparison,
                           "clear", "warning" if warning is not None else "critical",
                           strict=False)
    return problems


def check_rule(rule: Rule) -> list[Problem]:
    """Cross-field problems of one rule, each with the key path it concerns."""
    problems: list[Problem] = []
    if isinstance(rule, NoDataRule):
        c = rule.critical_after_hours
        if c is not None and c <= rule.warning_after_hours:
            problems.append((("critical_after_hours",),
                             f"must be greater than warning_after_hours "
                             f"(got {c} <= {rule.warning_after_hours})"))
        return problems
    if rule.persistence.hours > rule.persistence.of:
        problems.append((("persistence", "hours"),
                         f"must not exceed persistence.of (got {rule.persistence.hours} > "
                         f"{rule.persistence.of})"))
    problems += _check_levels(rule, rule.warning, rule.critical, rule.clear, ())
    if rule.forecast is not None and (rule.critical is None or rule.critical.absolute is None
                                      or rule.comparison == "either"):
        problems.append((("forecast",), "a forecast needs an absolute critical level on an "
                                        "'above' or 'below' rule"))
    spec = rule.baseline if isinstance(rule, ThresholdRule) else None
    if spec is not None and spec.expected is not None:
        if rule.metric in spec.expected.inputs:
            problems.append((("baseline", "expected", "inputs"),
                             f"must not list the rule's own metric {rule.metric!r}"))
        if len(set(spec.expected.inputs)) < len(spec.expected.inputs):
            problems.append((("baseline", "expected", "inputs"), "lists a metric twice"))
        if spec.expected.proportional and (not spec.expected.log
                                           or len(spec.expected.inputs) != 1):
            problems.append((("baseline", "expected", "proportional"),
                             "needs log: true and exactly one input"))
    allowed = rule.applies_to.models
    for model in rule.models:
        if allowed is not None and model not in allowed:
            problems.append((("models", model),
                             f"override for {model!r}, which applies_to.models excludes"))
        lw, lc, lclr = rule.levels_for(model)
        if rule.models[model] != LevelsOverride():
            problems += _check_levels(rule, lw, lc, lclr, ("models", model))
    return problems
