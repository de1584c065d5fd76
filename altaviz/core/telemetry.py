"""The telemetry contract shared by the simulator (which writes landing files) and the ETL.

A landing file is a Parquet file with one row per compressor and 10-minute timestamp ("wide"
rows, as field gateways send them). Keeping the contract in one module means the simulator,
the ETL's explicit bronze schema and the rules' metric names cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

CADENCE_MINUTES = 10
READINGS_PER_HOUR = 60 // CADENCE_MINUTES
MAX_STAGES = 4
ChannelGroup = Literal["frame", "stage", "driver"]


@dataclass(frozen=True)
class Channel:
    """One measured channel: its landing column, unit and physically possible range.

    Values outside ``[low, high]`` cannot come from a working sensor: the ETL treats such a
    value as the channel missing for that reading (the rest of the reading is kept); this is
    a plausibility range, not an alarm threshold. ``group`` says what carries the channel: the
    compressor frame, one of its stages, or the driver (see :mod:`altaviz.core.catalog` for
    which models carry which).
    """

    name: str
    unit: str
    low: float
    high: float
    description: str
    group: ChannelGroup = "frame"


def _stage_channels() -> list[Channel]:
    channels: list[Channel] = []
    for s in range(1, MAX_STAGES + 1):
        channels += [
            Channel(f"stage{s}_suction_psig", "psig", -15.0, 3000.0,
                    f"stage {s} suction pressure", group="stage"),
            Channel(f"stage{s}_discharge_psig", "psig", -15.0, 3000.0,
                    f"stage {s} discharge pressure", group="stage"),
            Channel(f"stage{s}_discharge_temp_f", "F", -40.0, 600.0,
                    f"stage {s} discharge gas temperature", group="stage"),
        ]
    return channels


#: Every channel a landing file may carry. A unit sends null for a channel it does not have
#: (stages beyond its stage count, the jacket water of a driver without one); which channels
#: a unit has comes from the model catalog (:mod:`altaviz.core.catalog`).
CHANNELS: tuple[Channel, ...] = (
    Channel("vibration_frame_mm_s", "mm/s RMS", 0.0, 200.0, "frame vibration, top, rod direction"),
    Channel("vibration_cylinder_mm_s", "mm/s RMS", 0.0, 200.0, "cylinder vibration, lateral"),
    Channel("vibration_skid_mm_s", "mm/s RMS", 0.0, 200.0, "skid / foundation vibration"),
    *_stage_channels(),
    Channel("suction_temp_f", "F", -40.0, 300.0, "first-stage suction gas temperature"),
    Channel("flow_mmscfd", "MMSCFD", 0.0, 200.0, "gas flow"),
    Channel("speed_rpm", "rpm", 0.0, 2500.0, "driver / crankshaft speed"),
    Channel("oil_pressure_psig", "psig", 0.0, 200.0, "frame lube-oil pressure"),
    Channel("oil_temp_f", "F", -40.0, 350.0, "frame lube-oil temperature"),
    Channel("oil_filter_dp_psid", "psid", 0.0, 100.0, "lube-oil filter differential pressure"),
    Channel("bearing_temp_max_f", "F", -40.0, 400.0, "hottest main-bearing temperature"),
    Channel("bearing_temp_min_f", "F", -40.0, 400.0, "coolest main-bearing temperature"),
    Channel("jacket_water_temp_f", "F", -40.0, 350.0, "engine jacket-water outlet temperature",
            group="driver"),
    Channel("ambient_temp_f", "F", -60.0, 150.0, "ambient air temperature"),
)

CHANNEL_BY_NAME = {c.name: c for c in CHANNELS}

#: Landing-file key columns. ``arrived_at`` is when the gateway's batch reached us (the same for
#: every row of a file); ``ts`` is when the reading was measured. Both are UTC.
KEY_FIELDS: tuple[pa.Field, ...] = (
    pa.field("compressor_id", pa.string(), nullable=True),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=True),
    pa.field("arrived_at", pa.timestamp("us", tz="UTC"), nullable=True),
)

#: The typed landing schema. Some gateways send text instead (every channel as a string);
#: the ETL accepts both, and a value that does not parse is that channel missing.
LANDING_SCHEMA = pa.schema([*KEY_FIELDS, *(pa.field(c.name, pa.float64()) for c in CHANNELS)])
TEXT_LANDING_SCHEMA = pa.schema([*KEY_FIELDS, *(pa.field(c.name, pa.string()) for c in CHANNELS)])


@dataclass(frozen=True)
class Metric:
    """A metric aggregated hourly into ``sensor_readings_agg`` and named by rules.

    ``sql`` is a DuckDB expression over one silver reading (wide row) that gives the metric's
    value; channels map to themselves, derived metrics combine channels.
    """

    name: str
    unit: str
    sql: str
    description: str


def _stage_ratio(s: int) -> Metric:
    return Metric(
        f"stage{s}_ratio", "ratio",
        f"(stage{s}_discharge_psig + 14.7) / nullif(stage{s}_suction_psig + 14.7, 0)",
        f"stage {s} absolute pressure ratio (discharge / suction, psia)",
    )


DERIVED_METRICS: tuple[Metric, ...] = (
    Metric("discharge_temp_max_f", "F",
           "greatest(" + ", ".join(f"stage{s}_discharge_temp_f" for s in range(1, MAX_STAGES + 1))
           + ")",
           "hottest stage discharge temperature"),
    Metric("avg_suction_discharge_temp_f", "F",
           "(suction_temp_f + greatest(" + ", ".join(
               f"stage{s}_discharge_temp_f" for s in range(1, MAX_STAGES + 1)) + ")) / 2",
           "average of suction and hottest discharge temperature (Ariel performance check)"),
    Metric("bearing_spread_f", "F", "bearing_temp_max_f - bearing_temp_min_f",
           "main-bearing temperature spread (hottest minus coolest)"),
    *(_stage_ratio(s) for s in range(1, MAX_STAGES + 1)),
)

#: Every metric the hourly aggregates carry: each channel plus the derived metrics. DuckDB's
#: greatest() ignores nulls, so absent stages do not hide present ones; a metric whose value
#: is null for a reading (a stage the unit lacks) produces no aggregate row. The per-stage
#: pressures come last (appended after the derived metrics, migration 230): rules judge a
#: stage through its ratio, but a frozen pressure transmitter is only visible in the
#: pressure's own aggregates (its 4-hour standard deviation is exactly zero).
METRICS: tuple[Metric, ...] = (
    *(Metric(c.name, c.unit, c.name, c.description) for c in CHANNELS
      if not c.name.endswith("_psig") or c.name == "oil_pressure_psig"),
    *DERIVED_METRICS,
    *(Metric(c.name, c.unit, c.name, c.description) for c in CHANNELS
      if c.name.endswith("_psig") and c.name != "oil_pressure_psig"),
)

METRIC_BY_NAME = {m.name: m for m in METRICS}


def _sources(metric: Metric) -> tuple[str, ...]:
    """The other metrics a metric is computed from (channels named in its SQL), except those
    inside ``greatest(...)``: the hottest of several only freezes when the hottest one does,
    and then the metric's own aggregates show it."""
    words = set(re.findall(r"[a-z_0-9]+", re.sub(r"greatest\([^)]*\)", "", metric.sql)))
    return tuple(m.name for m in METRICS if m.name in words and m.name != metric.name)


#: For each metric, the metrics it is computed from (a stage ratio: the stage's suction and
#: discharge pressures); empty for a channel. A frozen source freezes what the metric says
#: about the machine, though the metric itself still moves with its other sources.
METRIC_SOURCES: dict[str, tuple[str, ...]] = {m.name: _sources(m) for m in METRICS}
