"""The simulation run: plan the window, then generate, batch, dirty and write it day by day.

Memory stays bounded by one day of the whole fleet, whatever the number of days, because every
landing file is written as soon as its hour is generated (bench/bench_simulator.py measures the
peak at 30 days).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet
from altaviz.core.telemetry import CADENCE_MINUTES, CHANNELS, READINGS_PER_HOUR
from altaviz.simulator.config import SimulationConfig
from altaviz.simulator.dirty import DefectCounts, IdPool, Rows, encode
from altaviz.simulator.faults import STEPS_PER_DAY, Fault, plan_faults
from altaviz.simulator.field import FieldPlan, plan_field
from altaviz.simulator.fleet_gen import UnitTable, generate_fleet
from altaviz.simulator.ground_truth import (
    FaultRecord,
    GroundTruth,
    NuisanceRecord,
    OperationCounts,
    ShutdownRecord,
)
from altaviz.simulator.physics.ambient import Ambient
from altaviz.simulator.physics.channels import BlockInputs, generate_block
from altaviz.simulator.physics.transients import STARTUP_MINUTES
from altaviz.simulator.schedule import NEVER, Schedule, build_schedule, gap_mask
from altaviz.simulator.writer import LandingWriter

SIMULATOR_VERSION = 2
_STEP_US = CADENCE_MINUTES * 60 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SimulationResult:
    """What a run wrote, and the truth about it."""

    out: Path
    fleet_path: Path
    ground_truth_path: Path
    landing_dir: Path
    files: tuple[Path, ...]
    rows_written: int
    readings_generated: int
    fleet: Fleet
    ground_truth: GroundTruth
    elapsed_s: float


def _prepare_out(out: Path, overwrite: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    previous = [p for p in (out / "landing", out / "fleet.json", out / "ground_truth.json")
                if p.exists()]
    if previous and not overwrite:
        raise InputError(f"output folder {out} already holds a simulation ({previous[0].name}); "
                         "choose an empty folder or pass --overwrite")
    probe = out / ".altaviz-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder {out} is not writable: {exc.strerror or exc}") from None
    for p in previous:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _ts(start: datetime, step: int) -> datetime:
    return start + timedelta(minutes=CADENCE_MINUTES * step)


def simulate(config: SimulationConfig, progress: Progress | None = None) -> SimulationResult:
    """Generate the fleet, its telemetry landing files and the ground truth under ``config.out``.

    Args:
        config: what to simulate; the same config always produces byte-identical files.
        progress: called as ``progress(days_done, days_total)`` after each simulated day.

    Raises:
        InputError: the output folder cannot be created or written, or already holds a run
            (unless ``config.overwrite``).
    """
    began = time.perf_counter()
    out = config.out
    _prepare_out(out, config.overwrite)
    fleet, units = generate_fleet(config)
    faults = plan_faults(config, units)
    field = plan_field(config, units)
    schedule = build_schedule(config, units.n, faults, field)
    ambient = Ambient(config, units.site_basin, field.hot_spells if field else ())
    inputs = BlockInputs(units, schedule, faults, ambient, config.seed, field)
    stuck_values: dict[int, float] = {}
    writer = LandingWriter(out / "landing")
    counts = DefectCounts(comm_gaps=int((schedule.gap_start < NEVER).sum()))
    pool = IdPool(units.ids)
    org_ids = [o.org_id for o in fleet.organizations]
    delay_rng = np.random.default_rng([config.seed, 5])
    org_delay_s = delay_rng.integers(120, 540, len(org_ids))
    start_us = (config.start - _EPOCH) // timedelta(microseconds=1)
    dirt = config.dirt

    with writer:
        for day in range(config.days):
            block = generate_block(inputs, day, stuck_values)
            rng = np.random.default_rng([config.seed, 20, day])
            steps = np.arange(day * STEPS_PER_DAY, (day + 1) * STEPS_PER_DAY)
            lost = gap_mask(schedule, steps)
            missing = (rng.random(lost.shape) < dirt.missing_rate) & ~lost
            counts.comm_gap_readings += int(lost.sum())
            counts.missing_readings += int(missing.sum())
            present = ~(lost | missing)
            for hour in range(24):
                s0 = hour * READINGS_PER_HOUR
                s1 = s0 + READINGS_PER_HOUR
                hour_end = _ts(config.start, day * STEPS_PER_DAY + s1)
                for o, (u0, u1) in enumerate(units.org_ranges):
                    mask = present[s0:s1, u0:u1]
                    t_rel, u_rel = np.nonzero(mask)
                    rows = Rows(
                        unit=u0 + u_rel,
                        ts_us=start_us + (day * STEPS_PER_DAY + s0 + t_rel) * _STEP_US,
                        values={c.name: block[c.name][s0:s1, u0:u1][mask] for c in CHANNELS},
                    )
                    arrived = hour_end + timedelta(seconds=int(org_delay_s[o])
                                                   + int(rng.integers(0, 120)))
                    late = np.zeros(len(rows), dtype=bool)
                    if len(rows) and rng.random() < dirt.late_batch_rate:
                        site = units.site_of[rows.unit[rng.integers(len(rows))]]
                        late = units.site_of[rows.unit] == site
                        delay = rng.uniform(*dirt.late_delay_hours)
                        late_arrival = arrived + timedelta(seconds=round(delay * 3600))
                        table = _encode(rows.select(late), late_arrival, pool, config, rng, counts)
                        writer.write(table, late_arrival, org_ids[o])
                        counts.late_batches += 1
                        counts.late_rows += table.num_rows
                    on_time = rows.select(~late)
                    if len(on_time):
                        table = _encode(on_time, arrived, pool, config, rng, counts)
                        writer.write(table, arrived, org_ids[o])
            del block
            if progress is not None:
                progress(day + 1, config.days)

    readings = units.n * config.days * STEPS_PER_DAY
    truth = GroundTruth(
        simulator_version=SIMULATOR_VERSION,
        config=config.model_dump(mode="json", exclude={"out", "overwrite"}),
        window_start=config.start, window_end=config.end, compressors=units.n,
        readings_generated=readings, rows_written=writer.rows,
        files_written=len(writer.paths),
        faults=tuple(_fault_record(f, fleet, units, config) for f in faults),
        defects=counts.as_dict(),
        operations=_operations(schedule, config),
        shutdowns=tuple(_shutdowns(schedule, fleet, units, config)),
        nuisance_events=tuple(_nuisance(schedule, field, stuck_values, fleet, units, config)),
    )
    fleet_path = out / "fleet.json"
    fleet_path.write_text(fleet.model_dump_json(indent=2) + "\n")
    truth_path = out / "ground_truth.json"
    truth_path.write_text(truth.model_dump_json(indent=2) + "\n")
    return SimulationResult(
        out=out, fleet_path=fleet_path, ground_truth_path=truth_path,
        landing_dir=out / "landing", files=tuple(writer.paths), rows_written=writer.rows,
        readings_generated=readings, fleet=fleet, ground_truth=truth,
        elapsed_s=time.perf_counter() - began,
    )


def _encode(rows: Rows, arrived: datetime, pool: IdPool, config: SimulationConfig,
            rng: np.random.Generator, counts: DefectCounts) -> pa.Table:
    dirt = config.dirt
    text = bool(rng.random() < dirt.text_file_rate)
    arrived_us = (arrived - _EPOCH) // timedelta(microseconds=1)
    return encode(rows, arrived_us, pool, dirt, text, rng, counts)


def _fault_record(f: Fault, fleet: Fleet, units: UnitTable,
                  config: SimulationConfig) -> FaultRecord:
    window = config.days * STEPS_PER_DAY
    failure = _ts(config.start, f.failure_step)
    return FaultRecord(
        org_id=fleet.compressors[f.unit].org_id, compressor_id=units.ids[f.unit],
        mode=f.mode,
        onset=_ts(config.start, f.onset_step),
        failure=failure if f.failure_step < window else None,
        expected_failure=failure, stage=f.stage, channels=f.channels,
        shape=f.shape,
    )


def _operations(schedule: Schedule, config: SimulationConfig) -> OperationCounts:
    window = config.days * STEPS_PER_DAY
    kinds = [s.kind for s in schedule.stops]
    stops = sum(1 for s in schedule.stops if s.start < window)
    starts = sum(1 for s in schedule.stops if s.end < window)
    stop_spikes = sum(1 for s in schedule.stops if 1 <= s.start < window)
    return OperationCounts(
        planned_shutdowns=kinds.count("planned"), cycling_stops=kinds.count("cycling"),
        failures=kinds.count("failure"), starts=starts, stops=stops,
        start_stop_spikes=starts + stop_spikes, shut_ins=kinds.count("shut_in"),
    )


def _shutdowns(schedule: Schedule, fleet: Fleet, units: UnitTable,
               config: SimulationConfig) -> list[ShutdownRecord]:
    window = config.days * STEPS_PER_DAY
    return [
        ShutdownRecord(org_id=fleet.compressors[s.unit].org_id, compressor_id=units.ids[s.unit],
                       kind=s.kind,
                       start=_ts(config.start, s.start),
                       end=_ts(config.start, s.end) if s.end < NEVER else None)
        for s in schedule.stops if s.start < window
    ]


_STOP_KINDS = {"planned": "planned_stop", "cycling": "cycling_stop", "shut_in": "shut_in"}


def _nuisance(schedule: Schedule, field: FieldPlan | None, stuck_values: dict[int, float],
              fleet: Fleet, units: UnitTable,
              config: SimulationConfig) -> list[NuisanceRecord]:
    """Every non-fault event of the run with its window, in time order."""
    window = config.days * STEPS_PER_DAY
    startup = STARTUP_MINUTES // CADENCE_MINUTES
    rows: list[tuple[int, int, int, str, str | None, float | None]] = []
    stops = schedule.stops      # per unit, in time order
    for i, s in enumerate(stops):
        if s.kind == "failure" or s.start >= window:
            continue
        rows.append((s.unit, s.start, s.end, _STOP_KINDS[s.kind], None, None))
        if s.end < window:
            hours_down = (s.end - s.start) * CADENCE_MINUTES / 60
            nxt = stops[i + 1].start if i + 1 < len(stops) and stops[i + 1].unit == s.unit \
                else NEVER
            rows.append((s.unit, s.end, min(s.end + startup, nxt), "startup", None,
                         hours_down))
    for u, k in zip(*np.nonzero(schedule.gap_start < NEVER), strict=True):
        rows.append((int(u), int(schedule.gap_start[u, k]), int(schedule.gap_end[u, k]),
                     "comm_gap", None, None))
    if field is not None:
        for i, e in enumerate(field.sensor_events):
            rows.append((e.unit, e.start, e.end, e.kind, e.channel, stuck_values.get(i)))
        basin_of_unit = [units.site_basin[int(i)] for i in units.site_of]
        for spell in field.hot_spells:
            rows += [(u, spell.start, spell.end, "hot_spell", None, spell.rise_f)
                     for u in range(units.n) if basin_of_unit[u] == spell.basin]
    rows.sort(key=lambda r: (r[1], r[0], r[3], r[4] or ""))
    return [
        NuisanceRecord(org_id=fleet.compressors[u].org_id, compressor_id=units.ids[u],
                       kind=kind,
                       start=_ts(config.start, start), end=_ts(config.start, end),
                       channel=channel, magnitude=magnitude)
        for u, start, end, kind, channel, magnitude in rows
    ]
