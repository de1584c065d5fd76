"""Whole-window operating schedule: load levels, stops (planned, cycling, shut-in, failure),
comm gaps.

Everything with memory across day boundaries is planned here once, up front, as small
per-unit arrays, so that the day-by-day generator stays stateless (but for the values stuck
sensors froze at) and any day can be produced on its own (the basis of chunked,
constant-memory generation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from altaviz.core.telemetry import READINGS_PER_HOUR
from altaviz.simulator.config import SimulationConfig
from altaviz.simulator.faults import STEPS_PER_DAY, Fault
from altaviz.simulator.field import FieldPlan

NEVER = 2**40  # a step index beyond any window: "no end"


@dataclass(frozen=True)
class Stop:
    """One stopped interval of one unit, in steps ``[start, end)``; end NEVER = still down."""

    unit: int
    kind: str      # planned | cycling | shut_in | failure
    start: int
    end: int


@dataclass(frozen=True)
class Schedule:
    """The planned operating history of every unit over the window."""

    load_hourly: np.ndarray     # (hours + 1, units) load fraction; row 0 = hour before start
    stop_start: np.ndarray      # (units, K) sorted, padded with NEVER
    stop_end: np.ndarray        # (units, K)
    stops: tuple[Stop, ...]
    gap_start: np.ndarray       # (units, G) comm gaps, padded with NEVER
    gap_end: np.ndarray


def _load(config: SimulationConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    hours = config.days * 24 + 1
    change = rng.random((hours, n)) < 1 / 30
    change[0] = True
    levels = rng.uniform(0.7, 1.0, (hours, n))
    last = np.where(change, np.arange(hours)[:, None], 0)
    np.maximum.accumulate(last, axis=0, out=last)
    return np.take_along_axis(levels, last, axis=0)


def _intervals(rng: np.random.Generator, rate_per_day: float, days: int,
               length: tuple[int, int]) -> list[tuple[int, int]]:
    count = int(rng.poisson(rate_per_day * days))
    starts = rng.integers(0, days * STEPS_PER_DAY, count)
    lengths = rng.integers(length[0], length[1] + 1, count)
    return [(int(s), int(s + ln)) for s, ln in zip(starts, lengths, strict=True)]


def _pad(rows: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, *(len(r) for r in rows)) if rows else 1
    start = np.full((len(rows), width), NEVER, dtype=np.int64)
    end = np.full((len(rows), width), NEVER, dtype=np.int64)
    for u, r in enumerate(rows):
        for k, (s, e) in enumerate(r):
            start[u, k], end[u, k] = s, e
    return start, end


def build_schedule(config: SimulationConfig, n: int, faults: list[Fault],
                   field: FieldPlan | None = None) -> Schedule:
    """Plan load, stops and communication gaps for ``n`` units (with ``field``: fixed-speed
    units hold their first load level, and shut-ins are stops too)."""
    rng = np.random.default_rng([config.seed, 3])
    load = _load(config, n, rng)
    shut_ins: dict[int, list[tuple[int, int, str]]] = {}
    if field is not None:
        load[:, field.fixed_speed] = load[0, field.fixed_speed]
        for u, s, e in field.shut_ins:
            shut_ins.setdefault(u, []).append((s, e, "shut_in"))
    window = config.days * STEPS_PER_DAY
    failure_at = {f.unit: f.failure_step for f in faults if f.failure_step < window}
    cycling = rng.random(n) < config.cycling_unit_share
    dirt = config.dirt
    gap_len = (max(1, round(dirt.comm_gap_hours[0] * READINGS_PER_HOUR)),
               max(1, round(dirt.comm_gap_hours[1] * READINGS_PER_HOUR)))
    stop_rows: list[list[tuple[int, int]]] = []
    gap_rows: list[list[tuple[int, int]]] = []
    stops: list[Stop] = []
    for u in range(n):
        kinds: list[tuple[int, int, str]] = [
            (s, e, "planned") for s, e in _intervals(
                rng, config.planned_shutdowns_per_unit_day, config.days, (12, 60))]
        if cycling[u]:
            kinds += [(s, e, "cycling") for s, e in _intervals(
                rng, config.cycling_stops_per_day, config.days, (3, 12))]
        kinds += shut_ins.get(u, [])
        kinds.sort()
        fail = failure_at.get(u, NEVER)
        kept: list[tuple[int, int, str]] = []
        for s, e, kind in kinds:
            if s >= fail or (kept and s <= kept[-1][1]):
                continue    # after failure, or overlapping/adjacent to the previous stop
            kept.append((s, min(e, fail), kind))
        if fail < NEVER:
            if kept and kept[-1][1] >= fail:
                kept.pop()      # the unit runs on to its failure instead
            kept.append((fail, NEVER, "failure"))
        stop_rows.append([(s, e) for s, e, _ in kept])
        stops += [Stop(u, kind, s, e) for s, e, kind in kept]
        gaps = sorted(_intervals(rng, dirt.comm_gaps_per_unit_day, config.days, gap_len))
        gap_rows.append(gaps)
    stop_start, stop_end = _pad(stop_rows)
    gap_start, gap_end = _pad(gap_rows)
    return Schedule(load, stop_start, stop_end, tuple(stops), gap_start, gap_end)


@dataclass(frozen=True)
class BlockState:
    """Operating state of every unit at every step of one block, shape (steps, units)."""

    running: np.ndarray
    since_stop: np.ndarray      # minutes since the current stop began (stopped steps)
    since_start: np.ndarray     # minutes since the last start (running steps; large if none)
    prev_stop_len: np.ndarray   # minutes the previous stop lasted (running steps)
    start_spike: np.ndarray     # bool: first reading after a start
    stop_spike: np.ndarray      # bool: last reading before a stop


def block_state(schedule: Schedule, steps: np.ndarray) -> BlockState:
    """Running/stopped state for the steps of one block, from the planned stops."""
    t = steps[:, None]
    shape = (steps.size, schedule.stop_start.shape[0])
    running = np.ones(shape, dtype=bool)
    since_stop = np.zeros(shape)
    since_start = np.full(shape, 1e9)
    prev_len = np.zeros(shape)
    start_spike = np.zeros(shape, dtype=bool)
    stop_spike = np.zeros(shape, dtype=bool)
    minutes = 60 / READINGS_PER_HOUR
    for k in range(schedule.stop_start.shape[1]):
        s = schedule.stop_start[:, k][None, :]
        e = schedule.stop_end[:, k][None, :]
        inside = (t >= s) & (t < e)
        running &= ~inside
        np.copyto(since_stop, (t - s) * minutes, where=inside)
        after = t >= e
        np.copyto(since_start, (t - e) * minutes, where=after)
        np.copyto(prev_len, np.broadcast_to((e - s) * minutes, shape), where=after)
        start_spike |= t == e
        stop_spike |= t == s - 1
    return BlockState(running, since_stop, since_start, prev_len, start_spike, stop_spike)


def gap_mask(schedule: Schedule, steps: np.ndarray) -> np.ndarray:
    """True where a unit's reading is lost in a communication gap, shape (steps, units)."""
    t = steps[:, None]
    lost = np.zeros((steps.size, schedule.gap_start.shape[0]), dtype=bool)
    for k in range(schedule.gap_start.shape[1]):
        lost |= (t >= schedule.gap_start[:, k][None, :]) & (t < schedule.gap_end[:, k][None, :])
    return lost
