"""Ambient temperature per site: basin climate, season, diurnal cycle, day-to-day weather and
(with field behaviour) hot spells over a basin.

Ambient drives suction, cooler-outlet, oil, bearing and jacket-water temperatures, which is
why cooler-fouling detection needs ambient correction (DOMAIN.md).
"""

from __future__ import annotations

import numpy as np

from altaviz.core.telemetry import CADENCE_MINUTES
from altaviz.simulator.catalog import BASINS
from altaviz.simulator.config import SimulationConfig
from altaviz.simulator.field import HotSpell, hot_spell_rise

_STEPS_PER_DAY = 24 * 60 // CADENCE_MINUTES
_PEAK_HOUR_UTC = 21.0      # about 15:00 Central time
_WARMEST_DAY = 200.0       # mid-July


class Ambient:
    """Ambient temperature model for every site of the fleet."""

    def __init__(self, config: SimulationConfig, site_basin: tuple[str, ...],
                 hot_spells: tuple[HotSpell, ...] = ()) -> None:
        self._site_basin = site_basin
        self._hot_spells = hot_spells
        rng = np.random.default_rng([config.seed, 4])
        n = len(site_basin)
        climate = np.array([BASINS[b][:3] for b in site_basin]).reshape(n, 3)
        self._mean = climate[:, 0] + rng.normal(0.0, 1.5, n)
        self._season = climate[:, 1]
        self._diurnal = climate[:, 2] * rng.uniform(0.9, 1.1, n)
        weather = np.empty((config.days + 2, n))
        weather[0] = rng.normal(0.0, 5.0, n)
        for k in range(1, config.days + 2):
            weather[k] = 0.6 * weather[k - 1] + rng.normal(0.0, 4.0, n)
        self._weather = weather
        start = config.start
        self._start_doy = start.timetuple().tm_yday + (start.hour + start.minute / 60) / 24
        self._start_hour = start.hour + start.minute / 60

    def at(self, steps: np.ndarray) -> np.ndarray:
        """Noise-free ambient temperature (F), shape (steps, sites)."""
        day_f = steps / _STEPS_PER_DAY
        doy = self._start_doy + day_f
        seasonal = np.cos(2 * np.pi * (doy - _WARMEST_DAY) / 365.25)[:, None] * self._season
        hour = (self._start_hour + steps * CADENCE_MINUTES / 60) % 24
        diurnal = np.cos(2 * np.pi * (hour - _PEAK_HOUR_UTC) / 24)[:, None] * self._diurnal
        k = np.floor(day_f).astype(np.int64)
        frac = (day_f - k)[:, None]
        weather = self._weather[k] * (1 - frac) + self._weather[k + 1] * frac
        result: np.ndarray = self._mean + seasonal + diurnal + weather
        rise = hot_spell_rise(self._hot_spells, self._site_basin, steps)
        if rise is not None:
            result += rise
        return result
