"""Generate the fleet (organizations, sites, compressors) and each unit's healthy baseline.

Compressor ids are assigned organization by organization, so every organization's units are a
contiguous index range: the per-hour batch of one organization is then a plain slice of the
day's arrays, which keeps batching cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from altaviz.core.fleet import Compressor, Fleet, Organization, Site
from altaviz.simulator.catalog import BASINS, MODELS, STAGE_RATIO
from altaviz.simulator.config import SimulationConfig

_OPERATORS = (
    "Mesa Ridge Midstream", "Caprock Gathering", "Pecos Valley Compression",
    "Frio Basin Energy", "Sabine Crossing Gas", "Llano Estacado Partners", "Nueces Field Services",
    "Red River Compression", "Big Bend Midstream", "Trinity Gathering",
)


@dataclass(frozen=True)
class UnitTable:
    """Per-unit arrays (index = compressor index in the fleet), the simulator's working form."""

    ids: tuple[str, ...]
    org_of: np.ndarray            # int, organization index
    site_of: np.ndarray           # int, site index
    model_of: np.ndarray          # int, index into MODELS
    stages: np.ndarray            # int 2..4
    rated_hp: np.ndarray
    rated_rpm: np.ndarray
    speed_min_frac: np.ndarray
    suction_psia: np.ndarray      # stage-1 suction, absolute
    stage_ratio: np.ndarray       # per-stage pressure ratio
    temp_exponent: np.ndarray     # discharge temperature = T_in(R) * ratio ** exponent
    gas_temp: np.ndarray          # stage-1 suction gas temperature at 75 F ambient
    cooler_out: np.ndarray        # interstage cooler outlet temperature at 75 F ambient
    flow_factor: np.ndarray       # unit efficiency multiplier on flow
    vib_frame: np.ndarray
    vib_cylinder: np.ndarray
    vib_skid: np.ndarray
    oil_pressure: np.ndarray
    oil_temp: np.ndarray
    filter_dp: np.ndarray
    bearing_rise: np.ndarray
    bearing_spread: np.ndarray
    jacket_water: np.ndarray      # NaN: no jacket-water channel
    org_ranges: tuple[tuple[int, int], ...]   # [first, last) unit index per organization
    site_basin: tuple[str, ...]

    @property
    def n(self) -> int:
        """Number of units."""
        return len(self.ids)


def _slug(name: str) -> str:
    return "-".join(name.lower().split())


def _org_sizes(n: int, k: int, rng: np.random.Generator) -> list[int]:
    weights = rng.uniform(0.5, 1.5, k)
    sizes = np.maximum(1, np.floor(n * weights / weights.sum()).astype(int))
    while sizes.sum() > n:
        sizes[int(np.argmax(sizes))] -= 1
    sizes[int(np.argmax(weights))] += n - int(sizes.sum())
    return [int(s) for s in sizes]


def generate_fleet(config: SimulationConfig) -> tuple[Fleet, UnitTable]:
    """The fleet and the per-unit baselines, fully determined by ``config.seed``."""
    rng = np.random.default_rng([config.seed, 1])
    n = config.compressors
    orgs: list[Organization] = []
    sites: list[Site] = []
    site_basin: list[str] = []
    site_of = np.empty(n, dtype=np.int64)
    org_of = np.empty(n, dtype=np.int64)
    model_of = np.empty(n, dtype=np.int64)
    org_ranges: list[tuple[int, int]] = []
    shares = np.array([m.fleet_share for m in MODELS])
    basins = list(BASINS)
    unit = 0
    for k, size in enumerate(_org_sizes(n, config.org_count, rng)):
        base = _OPERATORS[k % len(_OPERATORS)]
        name = base if k < len(_OPERATORS) else f"{base} {k // len(_OPERATORS) + 1}"
        org = Organization(org_id=_slug(name), name=name)
        orgs.append(org)
        org_ranges.append((unit, unit + size))
        home_basins = rng.choice(len(basins), size=2, replace=False)
        left, site_no = size, 0
        while left > 0:
            site_no += 1
            count = min(left, int(rng.integers(3, 13)))
            basin = basins[int(home_basins[0] if rng.random() < 0.7 else home_basins[1])]
            lat0, lat1, lon0, lon1 = BASINS[basin][3]
            site_id = f"{org.org_id}-s{site_no:03d}"
            sites.append(Site(org_id=org.org_id, site_id=site_id,
                              name=f"{basin} station {site_no}", basin=basin,
                              latitude=round(float(rng.uniform(lat0, lat1)), 4),
                              longitude=round(float(rng.uniform(lon0, lon1)), 4)))
            site_basin.append(basin)
            main_model = int(rng.choice(len(MODELS), p=shares))
            for _ in range(count):
                site_of[unit] = len(sites) - 1
                org_of[unit] = k
                model_of[unit] = (main_model if rng.random() < 0.75
                                  else int(rng.choice(len(MODELS), p=shares)))
                unit += 1
            left -= count

    stages = np.empty(n, dtype=np.int64)
    for m, spec in enumerate(MODELS):
        idx = np.flatnonzero(model_of == m)
        stages[idx] = rng.choice(spec.stages, size=idx.size, p=spec.stage_weights)
    ratio_lo = np.array([STAGE_RATIO[s][0] for s in (2, 3, 4)])[stages - 2]
    ratio_hi = np.array([STAGE_RATIO[s][1] for s in (2, 3, 4)])[stages - 2]
    ratio = rng.uniform(ratio_lo, ratio_hi)
    # Suction 10-150 psig, final discharge at most 1,200 psig and at least 150 psig.
    max_ps = np.minimum(164.7, 1214.7 / ratio**stages)
    min_ps = np.maximum(24.7, 164.7 / ratio**stages)
    suction = rng.uniform(min_ps, np.maximum(min_ps, max_ps))

    def per_model(attr: str) -> np.ndarray:
        out = np.empty(n)
        for m, spec in enumerate(MODELS):
            idx = model_of == m
            rng_range = getattr(spec, attr)
            if rng_range is None:
                out[idx] = np.nan
            else:
                out[idx] = rng.uniform(rng_range[0], rng_range[1], int(idx.sum()))
        return out

    def model_value(attr: str) -> np.ndarray:
        return np.array([getattr(MODELS[m], attr) for m in range(len(MODELS))])[model_of]

    table = UnitTable(
        ids=tuple(f"COMP-{i + 1:04d}" for i in range(n)),
        org_of=org_of, site_of=site_of, model_of=model_of, stages=stages,
        rated_hp=model_value("rated_hp").astype(float),
        rated_rpm=model_value("rated_rpm").astype(float),
        speed_min_frac=model_value("speed_min_frac").astype(float),
        suction_psia=suction, stage_ratio=ratio,
        temp_exponent=rng.uniform(0.19, 0.22, n),
        gas_temp=rng.uniform(68.0, 88.0, n), cooler_out=rng.uniform(92.0, 105.0, n),
        flow_factor=rng.uniform(0.93, 1.05, n),
        vib_frame=per_model("vib_frame"), vib_cylinder=per_model("vib_cylinder"),
        vib_skid=per_model("vib_skid"), oil_pressure=per_model("oil_pressure"),
        oil_temp=per_model("oil_temp"), filter_dp=rng.uniform(2.5, 5.5, n),
        bearing_rise=per_model("bearing_rise"), bearing_spread=per_model("bearing_spread"),
        jacket_water=per_model("jacket_water"),
        org_ranges=tuple(org_ranges), site_basin=tuple(site_basin),
    )
    installed = rng.integers(200, 365 * 15, n)
    first_day = config.start.date()
    compressors = tuple(
        Compressor(
            org_id=orgs[int(org_of[i])].org_id, compressor_id=table.ids[i],
            site_id=sites[int(site_of[i])].site_id, model=MODELS[int(model_of[i])].model,
            driver=MODELS[int(model_of[i])].driver, rated_hp=MODELS[int(model_of[i])].rated_hp,
            rated_rpm=MODELS[int(model_of[i])].rated_rpm, stages=int(stages[i]),
            installed_on=_days_before(first_day, int(installed[i])),
        )
        for i in range(n)
    )
    return Fleet(organizations=tuple(orgs), sites=tuple(sites), compressors=compressors), table


def _days_before(day: date, days: int) -> date:
    return day - timedelta(days=days)
