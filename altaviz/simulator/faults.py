"""Fault planning and fault signatures (../shared/DOMAIN.md, "Failure modes").

A fault has an onset and a (planned) failure time; between them its progress ``p`` goes from
0 to 1 and drives the signature. Magnitudes are chosen so that each fault crosses a DOMAIN.md
warning setpoint well before failure (hours to days of lead time) and a critical/shutdown
level around failure, when the unit trips and stays down. With field behaviour on, faults
also differ in shape (a gradual drift, a step at onset that then worsens, or a slow start that
accelerates) and run 4 to 12 days from onset to failure, as field failures do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from altaviz.core.telemetry import READINGS_PER_HOUR
from altaviz.simulator.config import SimulationConfig
from altaviz.simulator.fleet_gen import UnitTable

MODES = ("bearing_wear", "cooler_fouling", "valve_degradation", "oil_degradation")
SHAPES = ("gradual", "step", "accelerating")
#: Share of the full signature a step-shaped fault shows at once at its onset.
_STEP_SHARE = 0.4
_MODE_WEIGHTS = (0.25, 0.2, 0.35, 0.2)
#: Onset-to-failure duration in days per mode (bearing heat lead 1-5 days; cooler fouling
#: over weeks; valves and oil slower), capped at 70% of the window so failures fit in it.
_DURATION_DAYS = {
    "bearing_wear": (1.5, 5.0), "cooler_fouling": (5.0, 21.0),
    "valve_degradation": (3.0, 14.0), "oil_degradation": (4.0, 20.0),
}
#: Share of faults planned to fail after the window (failure recorded as null).
_UNFINISHED_SHARE = 0.15
STEPS_PER_DAY = 24 * READINGS_PER_HOUR


@dataclass(frozen=True)
class Fault:
    """One injected fault; steps are 10-minute indices from the window start."""

    unit: int
    mode: str
    onset_step: int
    failure_step: int          # may lie beyond the window: then it is not reached
    stage: int | None
    channels: tuple[str, ...]
    shape: str = "gradual"


def _channels(mode: str, stage: int | None, stages: int) -> tuple[str, ...]:
    if mode == "bearing_wear":
        return ("bearing_temp_max_f", "bearing_temp_min_f", "oil_pressure_psig",
                "vibration_frame_mm_s", "vibration_cylinder_mm_s", "vibration_skid_mm_s")
    if mode == "oil_degradation":
        return ("oil_temp_f", "oil_pressure_psig", "oil_filter_dp_psid",
                "bearing_temp_max_f", "bearing_temp_min_f")
    assert stage is not None
    if mode == "cooler_fouling":
        return (f"stage{stage}_discharge_temp_f", "flow_mmscfd")
    shifted = f"stage{stage}_discharge_psig" if stage < stages else f"stage{stage}_suction_psig"
    return (f"stage{stage}_discharge_temp_f", shifted, "flow_mmscfd")


def plan_faults(config: SimulationConfig, units: UnitTable) -> list[Fault]:
    """Pick ``round(fault_share * N)`` units and give each a mode, stage, onset and failure."""
    rng = np.random.default_rng([config.seed, 2])
    shape_rng = np.random.default_rng([config.seed, 2, 1])
    count = round(config.fault_share * units.n)
    if count == 0:
        return []
    chosen = np.sort(rng.choice(units.n, size=count, replace=False))
    window = config.days * STEPS_PER_DAY
    field = config.field
    faults: list[Fault] = []
    for u in chosen:
        mode = MODES[int(rng.choice(len(MODES), p=_MODE_WEIGHTS))]
        lo, hi = _DURATION_DAYS[mode] if field is None else field.fault_days
        shape = "gradual"
        if field is not None:
            weights = np.array(field.fault_shape_weights)
            shape = SHAPES[int(shape_rng.choice(len(SHAPES), p=weights / weights.sum()))]
        duration = min(rng.uniform(lo, hi) * STEPS_PER_DAY, 0.7 * window)
        duration = max(duration, 12.0)
        if rng.random() < _UNFINISHED_SHARE:
            onset = window * rng.uniform(0.5, 0.9)
            duration = max(duration, window - onset + 6 * READINGS_PER_HOUR)
        else:
            onset = window * 0.1 + rng.uniform(0, max(0.0, 0.85 * window - duration))
        stages = int(units.stages[u])
        stage: int | None = None
        if mode == "cooler_fouling":
            stage = int(rng.integers(2, stages + 1))
        elif mode == "valve_degradation":
            stage = int(rng.integers(1, stages + 1))
        onset_step = int(onset)
        faults.append(Fault(unit=int(u), mode=mode, onset_step=onset_step,
                            failure_step=onset_step + int(duration), stage=stage,
                            channels=_channels(mode, stage, stages), shape=shape))
    return faults


def _late_exp(p: np.ndarray) -> np.ndarray:
    """0 -> 0, 1 -> 1, flat early and steep late: late-stage exponential growth."""
    return np.expm1(5.0 * p) / np.expm1(5.0)


def _shaped(p: np.ndarray, started: np.ndarray, shape: str) -> np.ndarray:
    """Progress reshaped: a step jumps at onset, an accelerating fault starts slowly."""
    if shape == "step":
        return np.where(started, _STEP_SHARE + (1.0 - _STEP_SHARE) * p, 0.0)
    if shape == "accelerating":
        return np.expm1(2.0 * p) / np.expm1(2.0)
    return p


def apply_faults(values: dict[str, np.ndarray], pressures: list[np.ndarray],
                 faults: list[Fault], steps: np.ndarray, stages: np.ndarray) -> None:
    """Add each fault's signature to the running values of one block, in place.

    ``values`` arrays and each of ``pressures`` (absolute pressure at stage boundary b:
    b=0 is stage-1 suction, b=s is stage-s discharge) have shape (steps, units).
    Oil/bearing coupling is handled by the caller: oil temperature is applied here before
    bearing temperatures are derived from it, through ``values["oil_temp_f"]``.
    """
    for f in faults:
        span = max(1, f.failure_step - f.onset_step)
        p = np.clip((steps - f.onset_step) / span, 0.0, 1.0)
        started = steps >= f.onset_step
        if not p.any() and not (f.shape == "step" and started.any()):
            continue
        p = _shaped(p, started, f.shape)
        u = f.unit
        if f.mode == "bearing_wear":
            values["bearing_rise_extra"][:, u] += 45.0 * p**1.5
            values["bearing_spread_extra"][:, u] += 40.0 * p**1.5
            values["oil_pressure_psig"][:, u] -= 12.0 * p
            growth = _late_exp(p)
            values["vibration_frame_mm_s"][:, u] += 9.5 * growth
            values["vibration_cylinder_mm_s"][:, u] += 3.0 * growth
            values["vibration_skid_mm_s"][:, u] += 0.8 * growth
        elif f.mode == "oil_degradation":
            values["oil_temp_f"][:, u] += 32.0 * p
            values["oil_pressure_psig"][:, u] -= 16.0 * p
            values["oil_filter_dp_psid"][:, u] += 7.0 * p**1.3
        elif f.mode == "cooler_fouling":
            assert f.stage is not None
            values[f"stage{f.stage}_discharge_temp_f"][:, u] += 110.0 * p
            values["flow_mmscfd"][:, u] *= 1.0 - 0.04 * p
        else:
            assert f.stage is not None
            s, n = f.stage, int(stages[u])
            shift = 1.0 - 0.15 * p
            if s < n:
                pressures[s][:, u] *= shift        # leaking stage's ratio falls, next one's rises
            else:
                pressures[s - 1][:, u] /= shift    # last stage: its suction (interstage) rises
            # Instability component: a slow pressure oscillation growing with the leak.
            wobble = 1.0 + 0.02 * p * np.sin(2 * np.pi * steps / (3 * READINGS_PER_HOUR))
            pressures[s][:, u] *= wobble
            values[f"stage{s}_discharge_temp_f"][:, u] += 60.0 * p**1.2
            values["flow_mmscfd"][:, u] *= 1.0 - 0.14 * p
