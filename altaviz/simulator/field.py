"""Ordinary field behaviour, planned once for the whole window (../shared/DOMAIN.md, "Normal
operating variation").

None of it is a machine fault, and all of it pages a technician if a detector mistakes it for
one: pipeline nominations move suction and line pressure, so flow swings by several percent at
constant speed; suction pressure drifts as the gathering system changes; hot spells lift
ambient for days; transmitters freeze on a value or drop out; some units lack an instrument;
units are shut in for days when the field cannot supply gas. Like the schedule, the plan is a
set of small per-unit arrays and event lists, so the day-by-day generator stays cheap. Each
kind of event draws from its own random stream: turning one kind off leaves the others, for
the same seed, exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from altaviz.core.telemetry import CHANNELS, READINGS_PER_HOUR
from altaviz.simulator.catalog import BASINS
from altaviz.simulator.config import FieldConfig, SimulationConfig
from altaviz.simulator.faults import STEPS_PER_DAY
from altaviz.simulator.fleet_gen import UnitTable

#: Instruments a package may be delivered without (a station meter instead of a unit flow
#: meter, no cylinder or skid pickup, no filter dP transmitter, one bearing RTD).
OPTIONAL_CHANNELS = ("flow_mmscfd", "vibration_cylinder_mm_s", "vibration_skid_mm_s",
                     "oil_filter_dp_psid", "bearing_temp_min_f")
#: Kinds of sensor trouble, in the order they are applied (a dropout hides a stuck value).
SENSOR_KINDS = ("stuck_sensor", "sensor_dropout", "missing_channel")
#: Hours over which a hot spell builds and fades.
_HOT_RAMP_STEPS = 12 * READINGS_PER_HOUR
#: Isentropic exponent of lean natural gas (DOMAIN.md: 1.26-1.30).
GAS_K = 1.28
_CHANNEL_NAMES = tuple(c.name for c in CHANNELS)


@dataclass(frozen=True)
class HotSpell:
    """Days of heat over one basin, in steps ``[start, end)``; ``rise_f`` at full strength."""

    basin: str
    start: int
    end: int
    rise_f: float


@dataclass(frozen=True)
class SensorEvent:
    """One channel of one unit misbehaving over steps ``[start, end)``."""

    unit: int
    kind: str          # one of SENSOR_KINDS
    channel: str
    start: int
    end: int


@dataclass(frozen=True)
class FieldPlan:
    """The field behaviour of every unit over the window."""

    fixed_speed: np.ndarray       # bool (units): one speed setpoint all window
    suction_amp: np.ndarray       # (2, units) fraction
    suction_period: np.ndarray    # (2, units) steps
    suction_phase: np.ndarray     # (2, units) radians
    line_amp: np.ndarray          # (units,)
    line_period: np.ndarray
    line_phase: np.ndarray
    drift_per_step: np.ndarray    # (units,) fraction of suction pressure per step
    cooler_gain: np.ndarray       # (units,) F of cooler outlet per F of ambient
    clearance: np.ndarray         # (units,) first-stage clearance fraction
    hot_spells: tuple[HotSpell, ...]
    sensor_events: tuple[SensorEvent, ...]
    shut_ins: tuple[tuple[int, int, int], ...]   # (unit, start, end) in steps
    event_start: np.ndarray       # (events,) for picking a block's events quickly
    event_end: np.ndarray

    def pressure_swings(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relative suction and line pressure offsets, each (steps, units)."""
        t = steps[:, None].astype(np.float64)
        suction = self.drift_per_step * t
        for k in range(self.suction_amp.shape[0]):
            suction = suction + self.suction_amp[k] * np.sin(
                2 * np.pi * t / self.suction_period[k] + self.suction_phase[k])
        line = self.line_amp * np.sin(2 * np.pi * t / self.line_period + self.line_phase)
        return suction, line


def _uniform(rng: np.random.Generator, pair: tuple[float, float], size: int) -> np.ndarray:
    return rng.uniform(pair[0], pair[1], size)


def _present_channels(units: UnitTable, u: int, missing: set[str]) -> list[str]:
    """Channels unit ``u`` reports (speed excluded: the engine panel's speed is trusted)."""
    out = []
    for name in _CHANNEL_NAMES:
        if name == "speed_rpm" or name in missing:
            continue
        if name.startswith("stage") and int(name[5]) > int(units.stages[u]):
            continue
        if name == "jacket_water_temp_f" and np.isnan(units.jacket_water[u]):
            continue
        out.append(name)
    return out


def _sensor_events(rng: np.random.Generator, units: UnitTable, days: int, kind: str,
                   rate: float, hours: tuple[float, float],
                   missing: list[set[str]]) -> list[SensorEvent]:
    window = days * STEPS_PER_DAY
    counts = rng.poisson(rate * days, units.n)
    events = []
    for u in np.flatnonzero(counts):
        channels = _present_channels(units, int(u), missing[u])
        for _ in range(int(counts[u])):
            name = channels[int(rng.integers(len(channels)))]
            start = int(rng.integers(0, window))
            length = max(1, round(rng.uniform(*hours) * READINGS_PER_HOUR))
            events.append(SensorEvent(int(u), kind, name, start, start + length))
    return events


def _hot_spells(rng: np.random.Generator, cfg: FieldConfig, days: int) -> list[HotSpell]:
    window = days * STEPS_PER_DAY
    spells: list[HotSpell] = []
    for basin in BASINS:
        count = int(rng.poisson(cfg.hot_spells_per_basin_day * days))
        planned = sorted(
            (int(rng.integers(0, window)), max(2 * _HOT_RAMP_STEPS,
                                               round(rng.uniform(*cfg.hot_spell_days)
                                                     * STEPS_PER_DAY)),
             float(rng.uniform(*cfg.hot_spell_f)))
            for _ in range(count))
        last_end = -1
        for start, length, rise in planned:
            if start < last_end:
                continue        # one heat wave at a time over a basin
            spells.append(HotSpell(basin, start, start + length, round(rise, 1)))
            last_end = start + length
    return spells


def hot_spell_rise(spells: tuple[HotSpell, ...], site_basin: tuple[str, ...],
                   steps: np.ndarray) -> np.ndarray | None:
    """Ambient added by hot spells, (steps, sites), or None when no spell touches ``steps``."""
    rise: np.ndarray | None = None
    for spell in spells:
        if spell.end <= steps[0] or spell.start > steps[-1]:
            continue
        ramp = np.minimum(np.clip((steps - spell.start) / _HOT_RAMP_STEPS, 0.0, 1.0),
                          np.clip((spell.end - steps) / _HOT_RAMP_STEPS, 0.0, 1.0))
        sites = np.array([b == spell.basin for b in site_basin])
        if rise is None:
            rise = np.zeros((steps.size, len(site_basin)))
        rise[:, sites] += (spell.rise_f * ramp)[:, None]
    return rise


def plan_field(config: SimulationConfig, units: UnitTable) -> FieldPlan | None:
    """The field behaviour of the run, or None for a calm run."""
    cfg = config.field
    if cfg is None:
        return None
    n, days = units.n, config.days
    rng = np.random.default_rng([config.seed, 30, 0])
    fixed = rng.random(n) < cfg.fixed_speed_share
    amp = _uniform(rng, cfg.suction_swing, n)
    split = rng.uniform(0.5, 0.7, n)
    suction_amp = np.stack([amp * split, amp * (1 - split)])
    periods = np.stack([_uniform(rng, cfg.swing_period_days, n) for _ in range(2)])
    suction_phase = rng.uniform(0, 2 * np.pi, (2, n))
    line_amp = _uniform(rng, cfg.line_swing, n)
    line_period = _uniform(rng, cfg.swing_period_days, n) * STEPS_PER_DAY
    line_phase = rng.uniform(0, 2 * np.pi, n)
    drift = rng.uniform(-1, 1, n) * cfg.suction_drift_per_day / STEPS_PER_DAY
    cooler_gain = _uniform(rng, cfg.cooler_ambient_gain, n)
    clearance = rng.uniform(0.08, 0.16, n)

    spells = _hot_spells(np.random.default_rng([config.seed, 30, 1]), cfg, days)

    miss_rng = np.random.default_rng([config.seed, 30, 2])
    missing: list[set[str]] = [set() for _ in range(n)]
    events: list[SensorEvent] = []
    window = days * STEPS_PER_DAY
    for u in np.flatnonzero(miss_rng.random(n) < cfg.missing_channel_unit_share):
        options = [c for c in OPTIONAL_CHANNELS
                   if c in _present_channels(units, int(u), set())]
        picks = miss_rng.choice(len(options), size=min(len(options),
                                                       1 + int(miss_rng.random() < 0.3)),
                                replace=False)
        for k in sorted(int(p) for p in picks):
            missing[u].add(options[k])
            events.append(SensorEvent(int(u), "missing_channel", options[k], 0, window))
    events += _sensor_events(np.random.default_rng([config.seed, 30, 3]), units, days,
                             "stuck_sensor", cfg.stuck_sensors_per_unit_day, cfg.stuck_hours,
                             missing)
    events += _sensor_events(np.random.default_rng([config.seed, 30, 4]), units, days,
                             "sensor_dropout", cfg.dropouts_per_unit_day, cfg.dropout_hours,
                             missing)
    events.sort(key=lambda e: (SENSOR_KINDS.index(e.kind), e.unit, e.start, e.channel))

    shut_rng = np.random.default_rng([config.seed, 30, 5])
    counts = shut_rng.poisson(cfg.shut_ins_per_unit_day * days, n)
    shut_ins = []
    for u in np.flatnonzero(counts):
        for _ in range(int(counts[u])):
            start = int(shut_rng.integers(0, window))
            length = round(shut_rng.uniform(*cfg.shut_in_days) * STEPS_PER_DAY)
            shut_ins.append((int(u), start, start + length))

    return FieldPlan(
        fixed_speed=fixed, suction_amp=suction_amp, suction_period=periods * STEPS_PER_DAY,
        suction_phase=suction_phase, line_amp=line_amp, line_period=line_period,
        line_phase=line_phase, drift_per_step=drift, cooler_gain=cooler_gain,
        clearance=clearance, hot_spells=tuple(spells), sensor_events=tuple(events),
        shut_ins=tuple(sorted(shut_ins)),
        event_start=np.array([e.start for e in events], dtype=np.int64),
        event_end=np.array([e.end for e in events], dtype=np.int64),
    )


def apply_sensor_events(out: dict[str, np.ndarray], plan: FieldPlan, steps: np.ndarray,
                        carry: dict[int, float]) -> None:
    """Freeze stuck channels at their first reading and null dropped or absent ones, in place.

    ``out`` holds one block's reported values (steps, units). A stuck value must outlive the
    block it started in, so it is kept in ``carry`` (event index -> value) for later blocks.
    """
    b0, b1 = int(steps[0]), int(steps[-1]) + 1
    for i in np.flatnonzero((plan.event_start < b1) & (plan.event_end > b0)):
        e = plan.sensor_events[int(i)]
        lo, hi = max(e.start, b0) - b0, min(e.end, b1) - b0
        column = out[e.channel]
        if e.kind == "stuck_sensor":
            value = carry.setdefault(int(i), float(column[lo, e.unit]))
            column[lo:hi, e.unit] = value
        else:
            column[lo:hi, e.unit] = np.nan

