"""Stopped units and start-ups: cool-down, warm-up, blowdown and start/stop spikes.

A stopped unit keeps reporting (its panel stays powered): speed, flow, oil pressure and
filter dP are zero, temperatures decay toward ambient and stage pressures settle out to
suction. After a start, values recover toward normal from where the stop left them. Only the
few (step, unit) cells that are stopped or warming up are computed, via flat indices.
"""

from __future__ import annotations

import numpy as np

from altaviz.simulator.schedule import BlockState

_WARM_WINDOW_MIN = 600.0
#: After a start, readings still recovering (five of the slowest warm-up time constants):
#: the window the ground truth gives each start-up.
STARTUP_MINUTES = 240


class Transients:
    """Applies the stopped/warming state of one block to running values."""

    def __init__(self, state: BlockState) -> None:
        self.state = state
        self._stopped = np.flatnonzero(~state.running)
        warming = state.running & (state.since_start < _WARM_WINDOW_MIN)
        self._warm = np.flatnonzero(warming)
        self._since_stop = state.since_stop.ravel()[self._stopped]
        self._since_start = state.since_start.ravel()[self._warm]
        self._prev_len = state.prev_stop_len.ravel()[self._warm]

    def settle(self, values: np.ndarray, cold: np.ndarray | float,
               tau_stop: float, tau_warm: float, lead: float = 0.0) -> None:
        """Decay toward ``cold`` while stopped (time constant ``tau_stop`` minutes) and recover
        toward normal after a start (``tau_warm``), in place. ``lead`` minutes are added to
        the time since start (a reading averages over its interval, so it is never at the
        exact instant of the start)."""
        flat = values.reshape(-1)
        cold_flat = (np.broadcast_to(cold, values.shape).reshape(-1)
                     if isinstance(cold, np.ndarray) else None)
        v = flat[self._stopped]
        c = cold_flat[self._stopped] if cold_flat is not None else cold
        flat[self._stopped] = c + (v - c) * np.exp(-self._since_stop / tau_stop)
        v = flat[self._warm]
        c = cold_flat[self._warm] if cold_flat is not None else cold
        start_level = c + (v - c) * np.exp(-self._prev_len / tau_stop)
        flat[self._warm] = v - (v - start_level) * np.exp(-(self._since_start + lead) / tau_warm)

    def zero_when_stopped(self, values: np.ndarray, floor: np.ndarray | None = None) -> None:
        """Set stopped cells to zero (or to ``floor`` values, e.g. residual vibration)."""
        flat = values.reshape(-1)
        flat[self._stopped] = 0.0 if floor is None else floor.reshape(-1)[self._stopped]

    def start_overshoot(self, values: np.ndarray, amount: float, tau: float) -> None:
        """Add a decaying overshoot after a start (cold, thick oil: pressure and filter dP)."""
        flat = values.reshape(-1)
        flat[self._warm] += amount * np.exp(-self._since_start / tau)
