"""The ground-truth file: what was really injected, so detection can be scored against it.

Faults are what a detector must catch; nuisance events are ordinary field behaviour it must
not page anyone for as a machine fault. Every timestamp is UTC and written with its offset
("Z"). Fields added since the first version have defaults, so an older file still reads, and a
reader that only knows ``faults`` reads a newer one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

FaultMode = Literal["bearing_wear", "cooler_fouling", "valve_degradation", "oil_degradation"]
FaultShape = Literal["gradual", "step", "accelerating"]
NuisanceKind = Literal["hot_spell", "stuck_sensor", "sensor_dropout", "missing_channel",
                       "planned_stop", "cycling_stop", "shut_in", "startup", "comm_gap"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultRecord(_Record):
    """One injected fault. ``failure`` is null when the unit had not failed by the window end
    (``expected_failure`` then says when it would have). ``shape``: how the signature grows
    (gradual; a step at onset that then worsens; slow, then accelerating)."""

    org_id: str
    compressor_id: str
    mode: FaultMode
    onset: datetime
    failure: datetime | None
    expected_failure: datetime
    stage: int | None
    channels: tuple[str, ...]
    shape: FaultShape = "gradual"


class ShutdownRecord(_Record):
    """A stopped interval: planned maintenance, process cycling, a shut-in, or a failure
    (end null)."""

    org_id: str
    compressor_id: str
    kind: Literal["planned", "cycling", "shut_in", "failure"]
    start: datetime
    end: datetime | None


class OperationCounts(_Record):
    """Normal-operation events that a detector must not mistake for faults."""

    planned_shutdowns: int
    cycling_stops: int
    failures: int
    starts: int
    stops: int
    start_stop_spikes: int
    shut_ins: int = 0


class NuisanceRecord(_Record):
    """Ordinary field behaviour over ``[start, end)`` that is not a machine fault.

    Kinds: ``hot_spell`` (ambient ``magnitude`` F above normal at full strength, building and
    fading over 12 hours at each end), ``stuck_sensor`` (``channel`` repeats its reading at
    ``start``, which is ``magnitude``), ``sensor_dropout`` (``channel`` null),
    ``missing_channel`` (the unit has no such instrument: null for the whole window),
    ``planned_stop``, ``cycling_stop`` (process stops: low suction and similar), ``shut_in``
    (down for days, no gas to move), ``startup`` (values recovering after a start,
    ``magnitude`` = hours the unit had been down) and ``comm_gap`` (no readings arrive).
    During a stop, speed and flow are zero and temperatures cool toward ambient.
    """

    org_id: str
    compressor_id: str
    kind: NuisanceKind
    start: datetime
    end: datetime
    channel: str | None = None
    magnitude: float | None = None


class GroundTruth(_Record):
    """Everything ``ground_truth.json`` holds."""

    simulator_version: int
    config: dict[str, Any]
    window_start: datetime
    window_end: datetime
    compressors: int
    readings_generated: int
    rows_written: int
    files_written: int
    faults: tuple[FaultRecord, ...]
    defects: dict[str, int]
    operations: OperationCounts
    shutdowns: tuple[ShutdownRecord, ...]
    nuisance_events: tuple[NuisanceRecord, ...] = ()
