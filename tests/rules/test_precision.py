"""The default rules separate a machine going wrong from a machine being used.

Each test replays one default rule and the form it replaced over a small fleet of two units
that live through the same ordinary variation (suction swings at constant speed, a hot spell,
a short first running history), one of which also develops a fault. The old form raises the
false alert on the healthy unit; the default rule does not, and still catches the fault.

The hourly values follow the physics the rules rely on (DOMAIN.md, "Normal operating
variation": capacity with speed, suction density and volumetric efficiency; discharge
temperature with inlet temperature and ratio; oil temperature with ambient; bearings with
their oil). The engine runs on the arrays directly, as a backtest from gold does.
"""

from __future__ import annotations

import numpy as np
import pytest

from rules.engine import Grid, Row, Units, evaluate_grid, plan
from rules.loader import load_rule_set
from rules.schema import RuleSet, ThresholdRule
from rules.sources import computed_baselines
from tests.rules.helpers import T0, h, one_rule

DEFAULT_RULES = "rules/thresholds.yaml"
DAYS = 30
HOURS = DAYS * 24
UNITS = Units("acme", ["COMP-A", "COMP-B"], ["s1", "s1"], ["Ariel JGK/4"] * 2, [1200.0] * 2)
HOT = (20 * 24, 24 * 24)          # a hot spell over the site: days 20-23
FAULT = 21 * 24                   # COMP-B's fault starts on day 21
COMMON = """
diagnosis: d
checks: [c]
basis: b
"""


def rule(yaml_rule: str) -> RuleSet:
    """A rule set of one rule written as a mapping (its keys unindented)."""
    first, *rest = yaml_rule.strip().splitlines()
    return one_rule("\n".join(["- " + first, *("  " + line for line in rest)]))


def default(rule_id: str) -> RuleSet:
    """The default rule set reduced to one rule."""
    rs = load_rule_set(DEFAULT_RULES)
    return rs.model_copy(update={"rules": (rs.rule(rule_id),)})


def field(seed: int = 1) -> dict[str, np.ndarray]:
    """Healthy hourly values (hours x units) of a two-stage unit at constant speed whose
    suction pressure swings 6% over five days, under a diurnal ambient and a hot spell."""
    rng = np.random.default_rng(seed)
    t = np.arange(HOURS, dtype=np.float64)[:, None] * np.ones((1, UNITS.n))

    def noise(scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, t.shape)

    ramp = np.clip(np.minimum(t - HOT[0], HOT[1] - t) / 12.0, 0.0, 1.0)
    ambient = 75 + 12 * np.cos(2 * np.pi * (t - 21) / 24) + 18 * ramp + noise(0.3)
    speed = 1000 + noise(1.0)
    p_in = 100 * (1 + 0.06 * np.sin(2 * np.pi * t / 120))
    ratio = np.sqrt(1000 / p_in)                       # two stages, line pressure 1000 psia
    ve = 1 - 0.12 * (ratio ** (1 / 1.28) - 1)
    flow = 6.0 * (speed / 1000) * (p_in / 100) * ve / (1 - 0.12 * ((10 ** 0.5) ** (1 / 1.28) - 1))
    suction = 90 + 0.3 * (ambient - 75) + noise(0.3)
    inlet2 = 100 + 0.4 * (ambient - 75)
    oil = 170 + 0.15 * (ambient - 75) + noise(0.2)
    return {
        "ambient_temp_f": ambient, "speed_rpm": speed, "stage1_ratio": ratio + noise(0.002),
        "stage2_ratio": ratio + noise(0.002), "flow_mmscfd": flow * (1 + noise(0.003)),
        "suction_temp_f": suction,
        "stage1_discharge_temp_f": (suction + 460) * ratio ** 0.22 - 460 + noise(0.4),
        "stage2_discharge_temp_f": (inlet2 + 460) * ratio ** 0.22 - 460 + noise(0.4),
        "oil_temp_f": oil, "oil_pressure_psig": 60 - 0.1 * (oil - 170) + noise(0.15),
        "bearing_temp_max_f": oil + 22 + noise(0.3),
    }


def progress() -> np.ndarray:
    """COMP-B's fault progress (0 before onset, 1 four days later); COMP-A stays healthy."""
    p = np.clip((np.arange(HOURS) - FAULT) / 96.0, 0.0, 1.0)
    return np.stack([np.zeros(HOURS), p], axis=1)


def run(rule_set: RuleSet, values: dict[str, np.ndarray], first_day: int = 17,
        stopped_before: int | None = None,
        stuck: dict[str, np.ndarray] | None = None, fit_flat: bool = True) -> list[Row]:
    """The rule set's rows over days ``first_day`` .. end; ``stopped_before``: the units did
    not run before that hour (a unit that just started); ``stuck``: metric -> hours (x units)
    its transmitter was frozen, whose 4-hour standard deviation is then zero; without
    ``fit_flat`` the baselines are fitted as if no transmitter had been frozen."""
    p = plan(rule_set, h(first_day * 24), h(HOURS - 1))
    t0 = min(p.first_hour, p.baseline_history_start()) if p.baselines else p.first_hour
    assert t0 >= T0
    grid = Grid(UNITS, T0, HOURS)
    needs = p.needs()
    wanted = set(needs.values) | set(p.baseline_needs().values if p.baselines else ())
    for metric, column in wanted:
        if column == "stddev_4h":   # also of the channels a metric is computed from
            grid.values[(metric, column)] = np.where(
                (stuck or {}).get(metric, np.zeros((HOURS, UNITS.n), dtype=bool)), 0.0, 0.5)
            continue
        v = values[metric].copy()
        if metric == "speed_rpm" and stopped_before is not None:
            v[:stopped_before] = 0.0
        grid.values[(metric, column)] = v
    for metric in {m for m, _ in wanted} | set(needs.present):
        grid.present[metric] = np.ones((HOURS, UNITS.n), dtype=bool)
        grid.data[metric] = grid.present[metric]
    fit_grid = grid
    if not fit_flat:
        fit_grid = Grid(UNITS, T0, HOURS, {k: v for k, v in grid.values.items()
                                           if k[1] != "stddev_4h"}, grid.present, grid.data)
    return evaluate_grid(p, grid, computed_baselines(p, fit_grid))


def fired(rows: list[Row], unit: str, after: int = 0) -> list[Row]:
    """Firing rows of ``unit`` from hour ``after`` on."""
    return [r for r in rows if r.firing and r.compressor_id == unit and r.hour >= h(after)]


def test_flow_against_expected_flow_ignores_suction_swings_and_catches_a_leak() -> None:
    old = rule("""
id: flow_deficit
kind: threshold
metric: flow_mmscfd
window: 4h
comparison: below
baseline: {days: 7, min_hours: 24}
warning: {percent: 5}
clear: {percent: 3}
persistence: {hours: 3, of: 4}
""" + COMMON)
    values = field()
    values["flow_mmscfd"] = values["flow_mmscfd"] * (1 - 0.14 * progress())
    assert fired(run(old, values), "COMP-A"), "the suction swing no longer moves flow"
    new = run(default("flow_deficit"), values)
    assert fired(new, "COMP-A") == []
    caught = fired(new, "COMP-B")
    assert caught and caught[0].hour > h(FAULT) and caught[0].hour < h(FAULT + 72)


def test_discharge_temperature_against_expected_ignores_a_hot_spell_and_catches_a_leak() -> None:
    old = rule("""
id: stage2_discharge_temp_over_baseline
kind: threshold
metric: stage2_discharge_temp_f
comparison: above
baseline: {days: 7, min_hours: 24}
warning: {percent: 5, delta: 12}
clear: {percent: 3, delta: 8}
persistence: {hours: 3, of: 4}
""" + COMMON)
    values = field()
    values["stage2_discharge_temp_f"] = values["stage2_discharge_temp_f"] + 60 * progress()
    false = fired(run(old, values), "COMP-A")
    assert false and all(h(HOT[0]) <= r.hour < h(HOT[1] + 12) for r in false)
    new = run(default("stage2_discharge_temp_over_baseline"), values)
    assert fired(new, "COMP-A") == []
    caught = fired(new, "COMP-B")
    assert caught and h(FAULT) < caught[0].hour < h(FAULT + 48)


def test_ratio_against_the_neighbouring_stage_ignores_suction_swings_and_catches_a_leak() -> None:
    old = rule("""
id: stage1_ratio_shift
kind: threshold
metric: stage1_ratio
window: 4h
comparison: either
baseline: {days: 7, min_hours: 24}
warning: {percent: 5}
clear: {percent: 3}
persistence: {hours: 3, of: 4}
""" + COMMON)
    values = field()
    # the amplitude that makes the swing cross 5% of a 7-day median
    values["stage1_ratio"] = values["stage1_ratio"] ** 1.6 / np.sqrt(10) ** 0.6
    values["stage2_ratio"] = values["stage2_ratio"] ** 1.6 / np.sqrt(10) ** 0.6
    # a leaking stage-1 valve: stage 1's ratio falls, stage 2's rises
    values["stage1_ratio"] = values["stage1_ratio"] * (1 - 0.15 * progress())
    values["stage2_ratio"] = values["stage2_ratio"] / (1 - 0.15 * progress())
    assert fired(run(old, values), "COMP-A")
    new = run(default("stage1_ratio_shift"), values)
    assert fired(new, "COMP-A") == []
    caught = fired(new, "COMP-B")
    assert caught and h(FAULT) < caught[0].hour < h(FAULT + 48)


@pytest.mark.parametrize(("rule_id", "metric", "change"), [
    ("oil_temp_over_expected", "oil_temp_f", 32.0),
    ("oil_pressure_below_expected", "oil_pressure_psig", -16.0),
    ("bearing_temp_over_expected", "bearing_temp_max_f", 45.0),
])
def test_oil_and_bearing_against_expected_ignore_heat_and_lead_the_setpoints(
        rule_id: str, metric: str, change: float) -> None:
    """Oil temperature follows ambient, oil pressure its oil temperature, a bearing its oil:
    none fires on the hot spell; each sees the fault's first days (the fixed OEM setpoints
    180 F, 50 psig, baseline + 20 F are reached only late in the same fault)."""
    values = field()
    values[metric] = values[metric] + change * progress()
    rows = run(default(rule_id), values)
    assert fired(rows, "COMP-A") == []
    caught = fired(rows, "COMP-B")
    assert caught and h(FAULT) < caught[0].hour < h(FAULT + 36)


def test_a_relative_rule_waits_for_three_days_of_running() -> None:
    """A unit started on day 14 ran light and cool its first day, so its day-16 baseline
    window holds one unrepresentative running day: the old one-day baseline judges normal
    running against it; the default waits for 72 running hours, then still catches the
    fault."""
    base = """
id: oil_over_baseline
kind: threshold
metric: oil_temp_f
comparison: above
baseline: {days: 7%s}
warning: {delta: 4}
clear: {delta: 3}
persistence: {hours: 2, of: 3}
""" + COMMON
    values = field()
    first_day = (np.arange(HOURS)[:, None] // 24) == 14
    values["oil_temp_f"] = values["oil_temp_f"] - np.where(first_day, 5.0, 0.0) \
        + 32 * progress()
    started = 14 * 24
    old = run(rule(base % ", min_hours: 24"), values, first_day=16, stopped_before=started)
    new = run(rule(base % ""), values, first_day=16, stopped_before=started)
    before_heat = [r for r in fired(new, "COMP-A", 16 * 24) if r.hour < h(HOT[0])]
    assert [r for r in fired(old, "COMP-A", 16 * 24) if r.hour < h(HOT[0])]
    assert before_heat == []
    # three running days later the baseline exists: the fault is caught
    assert fired(new, "COMP-B", FAULT)


def test_a_fit_needs_its_inputs_and_its_own_metric_is_no_input() -> None:
    """An hour whose inputs are missing has no expectation (neither beyond nor normal), and a
    rule may not explain its metric by itself."""
    values = field()
    values["flow_mmscfd"] = values["flow_mmscfd"] * 0.5
    values["stage1_ratio"] = np.full((HOURS, UNITS.n), np.nan)
    values["stage1_ratio"][: 17 * 24] = field()["stage1_ratio"][: 17 * 24]
    assert fired(run(default("flow_deficit"), values), "COMP-A") == []
    with pytest.raises(Exception, match="own metric"):
        rule("""
id: loop
kind: threshold
metric: flow_mmscfd
comparison: below
baseline: {days: 7, expected: {inputs: [flow_mmscfd]}}
warning: {percent: 5}
""" + COMMON)


def test_a_frozen_input_raises_no_machine_alert() -> None:
    """An oil-temperature transmitter frozen at its morning value through a hot spell: the
    bearing, judged against the frozen oil, would look hot; with the input flat for 4 hours
    there is no expectation, so no machine alert, and the fault on the other unit is caught."""
    values = field()
    frozen = np.zeros((HOURS, UNITS.n), dtype=bool)
    frozen[HOT[0]:HOT[1] + 24, 0] = True
    values["oil_temp_f"][:, 0] = np.where(frozen[:, 0], values["oil_temp_f"][HOT[0], 0],
                                          values["oil_temp_f"][:, 0])
    values["bearing_temp_max_f"] = values["bearing_temp_max_f"] + 45 * progress()
    # the healthy unit's bearing follows the real oil, which the hot spell warms
    values["bearing_temp_max_f"][:, 0] += np.where(frozen[:, 0], 6.0, 0.0)
    rs = default("bearing_temp_over_expected")
    assert fired(run(rs, values), "COMP-A"), "without the flat-line check the alert is raised"
    rows = run(rs, values, stuck={"oil_temp_f": frozen})
    assert fired(rows, "COMP-A") == []
    assert fired(rows, "COMP-B")


def fitted_ratio_rule() -> RuleSet:
    """The default stage 1 ratio rule with the slope on stage 2's ratio fitted, not one."""
    default_rule = default("stage1_ratio_shift").rules[0]
    assert isinstance(default_rule, ThresholdRule) and default_rule.baseline is not None
    expected = default_rule.baseline.expected
    assert expected is not None and expected.proportional
    return RuleSet(source="t", rules=(default_rule.model_copy(update={
        "baseline": default_rule.baseline.model_copy(update={
            "expected": expected.model_copy(update={"proportional": False})})}),))


def test_hours_with_a_frozen_pressure_are_left_out_of_the_fit() -> None:
    """COMP-A's stage 2 suction transmitter was frozen for six days of the fit window: its
    stage 2 ratio, computed from the frozen pressure, moved with the discharge pressure only.
    Fitted on those hours, the relation of the two ratios is wrong and a healthy unit fires
    once the transmitter is fixed; left out, the fit holds and nothing fires."""
    values = field()
    frozen = np.zeros((HOURS, UNITS.n), dtype=bool)
    frozen[4 * 24:10 * 24, 0] = True
    p_in = 1000 / values["stage1_ratio"][:, 0] ** 2        # stage 1 suction (psia)
    inter = np.sqrt(p_in * 1000)
    stuck_at = inter[4 * 24]
    values["stage2_ratio"][:, 0] = np.where(frozen[:, 0], 1000 / stuck_at,
                                            values["stage2_ratio"][:, 0])
    rs = fitted_ratio_rule()
    flat = {"stage2_suction_psig": frozen}
    assert fired(run(rs, values, stuck=flat, fit_flat=False), "COMP-A"), \
        "fitted on the frozen hours, the healthy unit fires"
    assert fired(run(rs, values, stuck=flat), "COMP-A") == []


def test_neighbouring_ratios_held_in_proportion_need_no_swing_in_the_fit() -> None:
    """Line pressure held steady for the unit's first days, then swinging: a slope fitted on
    the steady days is near zero, so the first swing looks like a 1.5% shift on a healthy
    unit; the default rule holds the two ratios in proportion (slope one, only the factor
    fitted) and stays silent, and still catches the leak on the other unit within a day."""
    values = field()
    t = np.arange(HOURS, dtype=np.float64)[:, None] * np.ones((1, UNITS.n))
    swing = np.where(t < 14 * 24, 0.0, 0.08 * np.sin(2 * np.pi * (t - 14 * 24) / 48))
    rng = np.random.default_rng(3)
    for s in ("stage1_ratio", "stage2_ratio"):
        values[s] = np.sqrt(10) * (1 + swing) * (1 + rng.normal(0, 0.0005, t.shape))
    values["stage1_ratio"] = values["stage1_ratio"] * (1 - 0.15 * progress())
    values["stage2_ratio"] = values["stage2_ratio"] / (1 - 0.15 * progress())
    assert fired(run(fitted_ratio_rule(), values, first_day=16), "COMP-A"), \
        "a slope fitted on steady days fires on the first swing"
    rows = run(default("stage1_ratio_shift"), values, first_day=16)
    assert fired(rows, "COMP-A") == []
    caught = fired(rows, "COMP-B")
    assert caught and h(FAULT) < caught[0].hour < h(FAULT + 24)
