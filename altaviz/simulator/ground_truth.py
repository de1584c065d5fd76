"""The ground-truth file: what was really injected, so detection can be scored against it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

FaultMode = Literal["bearing_wear", "cooler_fouling", "valve_degradation", "oil_degradation"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FaultRecord(_Record):
    """One injected fault. ``failure`` is null when the unit had not failed by the window end
    (``expected_failure`` then says when it would have)."""

    org_id: str
    compressor_id: str
    mode: FaultMode
    onset: datetime
    failure: datetime | None
    expected_failure: datetime
    stage: int | None
    channels: tuple[str, ...]


class ShutdownRecord(_Record):
    """A stopped interval: planned maintenance, process cycling, or a failure (end null)."""

    org_id: str
    compressor_id: str
    kind: Literal["planned", "cycling", "failure"]
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
