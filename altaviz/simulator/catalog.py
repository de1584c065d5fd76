"""The compressor models the simulated fleet is built from, with their normal operating ranges.

Ratings come from ../shared/DOMAIN.md. Each ``(low, high)`` range is where a *healthy* unit's
baseline is drawn; the ranges are chosen so that noise, diurnal ambient, load changes and
start/stop transients keep a healthy unit below every DOMAIN.md warning setpoint (oil pressure
above 50 psig, oil temperature below 180 F, bearing spread below 20 F, frame vibration below
8 mm/s, skid below 3 mm/s, G3516B jacket water below 210 F, filter dP below 10 psid,
discharge temperature below 300 F), so a rules engine raises no false alerts on them.
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[float, float]


@dataclass(frozen=True)
class ModelSpec:
    """One package type: frame, driver, ratings and the ranges its healthy baselines come from.

    ``jacket_water`` is None when the unit reports no jacket-water channel. The Ajax DPC-360 is
    an integral engine-compressor: DOMAIN.md gives a jacket-water outlet setpoint only for the
    Caterpillar G3516B, and the integral's engine cooling is treated as unmonitored at 10-minute
    cadence (a project choice), so its ``jacket_water_temp_f`` is null and ``driver`` is None.
    """

    model: str
    driver: str | None
    rated_hp: int
    rated_rpm: int
    stages: tuple[int, ...]
    stage_weights: tuple[float, ...]
    fleet_share: float
    speed_min_frac: float
    vib_frame: Range
    vib_cylinder: Range
    vib_skid: Range
    oil_pressure: Range
    oil_temp: Range
    bearing_rise: Range
    bearing_spread: Range
    jacket_water: Range | None


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        model="Ariel JGK/4", driver="Caterpillar G3516B", rated_hp=1380, rated_rpm=1400,
        stages=(2, 3, 4), stage_weights=(0.3, 0.45, 0.25), fleet_share=0.45,
        speed_min_frac=0.86, vib_frame=(1.8, 3.2), vib_cylinder=(3.0, 6.0),
        vib_skid=(0.6, 1.4), oil_pressure=(57.0, 63.0), oil_temp=(150.0, 162.0),
        bearing_rise=(12.0, 18.0), bearing_spread=(5.0, 10.0), jacket_water=(188.0, 197.0),
    ),
    ModelSpec(
        model="Ariel JGE/4", driver="Waukesha L7044GSI VHP", rated_hp=1680, rated_rpm=1200,
        stages=(2, 3, 4), stage_weights=(0.35, 0.45, 0.2), fleet_share=0.25,
        speed_min_frac=0.83, vib_frame=(2.0, 3.3), vib_cylinder=(3.5, 6.5),
        vib_skid=(0.7, 1.5), oil_pressure=(56.0, 62.0), oil_temp=(152.0, 164.0),
        bearing_rise=(12.0, 18.0), bearing_spread=(5.0, 10.0), jacket_water=(172.0, 182.0),
    ),
    ModelSpec(
        model="Ajax DPC-360", driver=None, rated_hp=360, rated_rpm=420,
        stages=(2,), stage_weights=(1.0,), fleet_share=0.30,
        speed_min_frac=0.90, vib_frame=(1.5, 2.8), vib_cylinder=(2.5, 5.0),
        vib_skid=(0.5, 1.2), oil_pressure=(55.0, 61.0), oil_temp=(145.0, 160.0),
        bearing_rise=(10.0, 16.0), bearing_spread=(4.0, 9.0), jacket_water=None,
    ),
)

#: Per-stage pressure-ratio ranges by stage count: keeps every stage's discharge temperature
#: in the normal 200-280 F band and the overall duty inside DOMAIN.md's gathering envelope
#: (suction 10-150 psig, discharge 150-1,200 psig).
STAGE_RATIO: dict[int, Range] = {2: (2.4, 3.2), 3: (2.3, 3.0), 4: (2.1, 2.6)}

#: Basin climate: annual mean F, seasonal half-swing F, diurnal half-swing F, lat/lon box.
BASINS: dict[str, tuple[float, float, float, tuple[float, float, float, float]]] = {
    "Permian": (63.0, 19.0, 12.0, (31.0, 32.8, -104.0, -101.5)),
    "Eagle Ford": (70.0, 15.0, 9.0, (28.2, 29.8, -99.5, -97.0)),
    "Haynesville": (65.0, 17.0, 8.0, (31.8, 32.9, -94.3, -93.2)),
}
