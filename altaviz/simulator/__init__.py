"""Fleet telemetry simulator with ground truth.

``simulate(SimulationConfig(...))`` writes ``fleet.json``, ``ground_truth.json`` and
Parquet landing files (the contract in :mod:`altaviz.telemetry`) under ``config.out``; see
:mod:`altaviz.simulator.engine` for the run and the sibling modules for each model. By default
the fleet behaves like a field (:mod:`altaviz.simulator.field`); ``field=None`` is the calm
profile.
"""

from altaviz.simulator.config import DEFAULT_START, DirtyConfig, FieldConfig, SimulationConfig
from altaviz.simulator.engine import SimulationResult, simulate
from altaviz.simulator.ground_truth import (
    FaultRecord,
    GroundTruth,
    NuisanceRecord,
    ShutdownRecord,
)

__all__ = [
    "DEFAULT_START",
    "DirtyConfig",
    "FaultRecord",
    "FieldConfig",
    "GroundTruth",
    "NuisanceRecord",
    "ShutdownRecord",
    "SimulationConfig",
    "SimulationResult",
    "simulate",
]
