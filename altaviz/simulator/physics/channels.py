"""One block (day) of channel values for every unit, vectorized over (steps, units).

Healthy running values come from each unit's baseline (fleet_gen) modulated by ambient, load
and noise; faults add their signatures; then stops, start-ups and spikes are applied, and last
the sensor trouble of the field plan (stuck, dropped, absent channels). Arrays are
(steps, units) so that one organization's hourly batch is a contiguous slice.

A calm run (no field plan) lets speed carry the load, so flow stays within a few percent of its
median. With field behaviour, suction and line pressure swing with nominations and drift, and
flow follows speed, suction pressure (gas density) and volumetric efficiency as a
reciprocating cylinder does (DOMAIN.md): it swings by several percent at constant speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from altaviz.core.telemetry import CHANNELS, MAX_STAGES, READINGS_PER_HOUR
from altaviz.simulator.faults import STEPS_PER_DAY, Fault, apply_faults
from altaviz.simulator.field import GAS_K, FieldPlan, apply_sensor_events
from altaviz.simulator.fleet_gen import UnitTable
from altaviz.simulator.physics.ambient import Ambient
from altaviz.simulator.physics.transients import Transients
from altaviz.simulator.schedule import Schedule, block_state

ATM = 14.7
RANKINE = 459.67

#: Reporting resolution per channel (decimals), as gateways round.
_DECIMALS = {"vibration": 2, "flow_mmscfd": 3, "oil_filter_dp_psid": 2}


@dataclass(frozen=True)
class BlockInputs:
    """Everything a block needs besides its step range; built once per run."""

    units: UnitTable
    schedule: Schedule
    faults: list[Fault]
    ambient: Ambient
    seed: int
    field: FieldPlan | None = None


def generate_block(inp: BlockInputs, day: int,
                   carry: dict[int, float] | None = None) -> dict[str, np.ndarray]:
    """Channel name -> (steps, units) float64 array for day ``day``; NaN = channel absent.

    ``carry`` keeps the values of stuck sensors from one day to the next: pass the same dict
    for every day, in order.
    """
    u = inp.units
    steps = np.arange(day * STEPS_PER_DAY, (day + 1) * STEPS_PER_DAY)
    shape = (steps.size, u.n)
    rng = np.random.default_rng([inp.seed, 10, day])

    def noise(scale: float) -> np.ndarray:
        z: np.ndarray = rng.standard_normal(shape, dtype=np.float32)
        z *= np.float32(scale)
        return z

    amb = inp.ambient.at(steps)[:, u.site_of]
    amb_dev = amb - 75.0
    hour = steps // READINGS_PER_HOUR
    within = (steps % READINGS_PER_HOUR + 1) / 3.0
    l_now = inp.schedule.load_hourly[hour + 1]
    l_prev = inp.schedule.load_hourly[hour]
    load = l_prev + (l_now - l_prev) * np.minimum(1.0, within)[:, None]
    load_dev = load - 0.85

    v: dict[str, np.ndarray] = {}
    field = inp.field
    # Load is taken mostly by speed: a recip moves gas in proportion to rpm at fixed
    # pressures. Calm, that is all, so healthy flow per unit stays within a few percent of its
    # median; with field behaviour the pressures move too (below).
    speed_frac = u.speed_min_frac + (1 - u.speed_min_frac) * load
    v["speed_rpm"] = u.rated_rpm * speed_frac * (1 + noise(0.002))
    phase = np.arange(u.n) * 0.7
    slow = np.sin(2 * np.pi * steps[:, None] / (3.3 * STEPS_PER_DAY) + phase)
    p_in = u.suction_psia * (1 + 0.04 * (1 - load) + 0.01 * slow + noise(0.004))
    p_out = (u.suction_psia * u.stage_ratio**u.stages
             * (1 + 0.008 * np.cos(2 * np.pi * steps[:, None] / (2.1 * STEPS_PER_DAY) + phase)
                + noise(0.003)))
    if field is not None:
        suction_swing, line_swing = field.pressure_swings(steps)
        p_in += u.suction_psia * suction_swing
        p_out += u.suction_psia * u.stage_ratio**u.stages * line_swing
    total_ratio = p_out / p_in
    r_eff = total_ratio ** (1.0 / u.stages)
    pressures: list[np.ndarray] = [p_in]
    for b in range(1, MAX_STAGES + 1):
        pb = np.where(b < u.stages, p_in * r_eff**b, np.where(b == u.stages, p_out, np.nan))
        pressures.append(pb)

    suction_t = u.gas_temp + 0.3 * amb_dev + noise(0.6)
    cooler_t = u.cooler_out + (0.2 if field is None else field.cooler_gain) * amb_dev
    heat = r_eff**u.temp_exponent * (1 + 0.03 * load_dev)
    for s in range(1, MAX_STAGES + 1):
        t_in = suction_t if s == 1 else cooler_t
        td = (t_in + RANKINE) * heat - RANKINE + noise(1.0)
        v[f"stage{s}_discharge_temp_f"] = np.where(s <= u.stages, td, np.nan)
    v["suction_temp_f"] = suction_t
    if field is None:
        v["flow_mmscfd"] = (u.rated_hp * 0.85 * speed_frac * u.flow_factor
                            / (70.0 * np.log(total_ratio)) * (1 + noise(0.01)))
    else:
        v["flow_mmscfd"] = _capacity(u, field, speed_frac, p_in, r_eff, suction_t) * (
            1 + noise(0.01))
    vib_load = 0.85 + 0.15 * load
    v["vibration_frame_mm_s"] = u.vib_frame * vib_load * (1 + noise(0.04))
    v["vibration_cylinder_mm_s"] = u.vib_cylinder * vib_load * (1 + noise(0.04))
    v["vibration_skid_mm_s"] = u.vib_skid * vib_load * (1 + noise(0.04))
    v["oil_temp_f"] = u.oil_temp + 0.15 * amb_dev + 4.0 * load_dev + noise(0.5)
    v["oil_pressure_psig"] = u.oil_pressure - 0.1 * (v["oil_temp_f"] - u.oil_temp) + noise(0.4)
    v["oil_filter_dp_psid"] = (u.filter_dp + 0.05 * steps[:, None] / STEPS_PER_DAY
                               + noise(0.15))
    v["jacket_water_temp_f"] = u.jacket_water + 0.1 * amb_dev + 2.0 * load_dev + noise(0.5)
    v["bearing_rise_extra"] = np.zeros(shape)
    v["bearing_spread_extra"] = np.zeros(shape)

    apply_faults(v, pressures, inp.faults, steps, u.stages)

    bearing_max = (v["oil_temp_f"] + u.bearing_rise + v.pop("bearing_rise_extra")
                   + 3.0 * load_dev + noise(0.6))
    v["bearing_temp_max_f"] = bearing_max
    v["bearing_temp_min_f"] = (bearing_max - u.bearing_spread - v.pop("bearing_spread_extra")
                               + noise(0.5))

    _apply_state(v, pressures, amb, inp, steps, rng)

    for s in range(1, MAX_STAGES + 1):
        v[f"stage{s}_suction_psig"] = pressures[s - 1] - ATM
        v[f"stage{s}_discharge_psig"] = pressures[s] - ATM
        absent = s > u.stages
        v[f"stage{s}_suction_psig"][:, absent] = np.nan
    v["ambient_temp_f"] = amb + noise(0.3)

    out: dict[str, np.ndarray] = {}
    for c in CHANNELS:
        arr = v[c.name]
        if c.low >= 0:
            np.maximum(arr, 0.0, out=arr)
        decimals = 2 if c.name.startswith("vibration") else _DECIMALS.get(c.name, 1)
        out[c.name] = np.round(arr, decimals)
    if field is not None:
        apply_sensor_events(out, field, steps, {} if carry is None else carry)
    return out


def _capacity(u: UnitTable, field: FieldPlan, speed_frac: np.ndarray, p_in: np.ndarray,
              r_eff: np.ndarray, suction_t: np.ndarray) -> np.ndarray:
    """Standard flow a healthy unit moves now: its design flow scaled by speed, suction
    density (pressure over absolute temperature) and first-stage volumetric efficiency,
    VE = 1 - clearance x (r^(1/k) - 1) (DOMAIN.md, GPSA sec. 13)."""
    design_ratio = u.stage_ratio
    design = u.rated_hp * 0.85 * u.flow_factor / (70.0 * np.log(design_ratio**u.stages))
    ve = 1 - field.clearance * (r_eff ** (1 / GAS_K) - 1)
    ve_design = 1 - field.clearance * (design_ratio ** (1 / GAS_K) - 1)
    density = (p_in / u.suction_psia) * ((u.gas_temp + RANKINE) / (suction_t + RANKINE))
    result: np.ndarray = design * speed_frac * density * ve / ve_design
    return result


def _apply_state(v: dict[str, np.ndarray], pressures: list[np.ndarray], amb: np.ndarray,
                 inp: BlockInputs, steps: np.ndarray, rng: np.random.Generator) -> None:
    state = block_state(inp.schedule, steps)
    tr = Transients(state)
    temp_taus = {"suction_temp_f": (60.0, 20.0), "oil_temp_f": (180.0, 45.0),
                 "bearing_temp_max_f": (180.0, 40.0), "bearing_temp_min_f": (180.0, 40.0),
                 "jacket_water_temp_f": (120.0, 30.0)}
    for s in range(1, MAX_STAGES + 1):
        temp_taus[f"stage{s}_discharge_temp_f"] = (60.0, 25.0)
    for name, (tau_stop, tau_warm) in temp_taus.items():
        tr.settle(v[name], amb, tau_stop, tau_warm)
    settle_out = pressures[0].copy()
    for b in range(1, MAX_STAGES + 1):
        tr.settle(pressures[b], settle_out, 15.0, 10.0)
    tr.settle(v["flow_mmscfd"], 0.0, 1e-3, 10.0, lead=5.0)
    for name in ("flow_mmscfd", "speed_rpm", "oil_pressure_psig", "oil_filter_dp_psid"):
        tr.zero_when_stopped(v[name])
    tr.start_overshoot(v["oil_pressure_psig"], 8.0, 20.0)
    tr.start_overshoot(v["oil_filter_dp_psid"], 1.2, 20.0)
    residual = np.abs(rng.standard_normal(amb.shape, dtype=np.float32)) * np.float32(0.05)
    for name in ("vibration_frame_mm_s", "vibration_cylinder_mm_s", "vibration_skid_mm_s"):
        tr.zero_when_stopped(v[name], residual)
    spikes = {"vibration_frame_mm_s": ((1.5, 3.0), (1.0, 2.5)),
              "vibration_cylinder_mm_s": ((1.5, 3.0), (1.0, 2.5)),
              "vibration_skid_mm_s": ((0.3, 0.7), (0.2, 0.5))}
    starts = np.flatnonzero(state.start_spike & state.running)
    stops = np.flatnonzero(state.stop_spike & state.running)
    for name, (on_start, on_stop) in spikes.items():
        flat = v[name].reshape(-1)
        flat[starts] += rng.uniform(*on_start, starts.size)
        flat[stops] += rng.uniform(*on_stop, stops.size)
