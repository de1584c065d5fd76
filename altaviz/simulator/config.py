"""Simulation settings: what to generate and how dirty to make it.

Kept as frozen pydantic models so the exact settings of a run can be written into
``ground_truth.json`` and a run can be reproduced from that file alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from altaviz.core.telemetry import CADENCE_MINUTES

#: Default window start: a Monday at midnight UTC.
DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)


class DirtyConfig(BaseModel):
    """Rates of each field-telemetry defect. Every rate defaults to a realistic small share.

    Rates are probabilities per reading (``*_rate`` on rows), per batch (``late_batch_rate``),
    per file (``text_file_rate``) or per unit-day (``comm_gaps_per_unit_day``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    missing_rate: float = Field(0.003, ge=0, le=0.5,
                                description="share of single readings that never arrive")
    comm_gaps_per_unit_day: float = Field(0.02, ge=0, le=5,
                                          description="multi-hour communication gaps per unit-day")
    comm_gap_hours: tuple[float, float] = (2.0, 8.0)
    late_batch_rate: float = Field(0.02, ge=0, le=1,
                                   description="share of hourly batches where one site's rows "
                                               "arrive late, as their own file")
    late_delay_hours: tuple[float, float] = (2.0, 26.0)
    duplicate_rate: float = Field(0.002, ge=0, le=0.2, description="rows sent twice")
    out_of_range_rate: float = Field(0.0005, ge=0, le=0.2,
                                     description="rows with physically impossible values")
    null_rate: float = Field(0.0005, ge=0, le=0.2,
                             description="rows with a null in a required field")
    text_file_rate: float = Field(0.03, ge=0, le=1,
                                  description="share of files a gateway sends as text")
    wrong_type_rate: float = Field(0.05, ge=0, le=0.5,
                                   description="share of rows in a text file with an "
                                               "unparseable value")
    unknown_compressor_rate: float = Field(0.0005, ge=0, le=0.2,
                                           description="rows naming a compressor not in the fleet")

    @model_validator(mode="after")
    def _row_rates_fit(self) -> DirtyConfig:
        total = (self.duplicate_rate + self.out_of_range_rate + self.null_rate
                 + self.unknown_compressor_rate + self.wrong_type_rate)
        if total >= 1:
            raise ValueError("row defect rates must add up to less than 1")
        for name in ("comm_gap_hours", "late_delay_hours"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high")
        return self

    @classmethod
    def none(cls) -> DirtyConfig:
        """No defects at all (clean data for tests and demos)."""
        return cls(missing_rate=0, comm_gaps_per_unit_day=0, late_batch_rate=0,
                   duplicate_rate=0, out_of_range_rate=0, null_rate=0, text_file_rate=0,
                   wrong_type_rate=0, unknown_compressor_rate=0)


class FieldConfig(BaseModel):
    """Ordinary operating variation of a real fleet, none of which is a machine fault.

    Rates are per unit-day (``*_per_unit_day``) or per basin-day (hot spells); ``(low, high)``
    pairs are ranges each event or unit draws from uniformly. Every kind of event is recorded in
    the ground truth with its window, so a detector can be scored on what it raises for them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fixed_speed_share: float = Field(0.5, ge=0, le=1,
                                     description="units that hold one speed setpoint all window")
    suction_swing: tuple[float, float] = Field(
        (0.03, 0.07), description="amplitude (fraction) of each unit's multi-day suction-pressure "
                                  "cycles (pipeline nominations, gathering supply)")
    line_swing: tuple[float, float] = Field(
        (0.01, 0.03), description="amplitude (fraction) of discharge (line) pressure cycles")
    swing_period_days: tuple[float, float] = (2.0, 9.0)
    suction_drift_per_day: float = Field(0.002, ge=0, le=0.02,
                                         description="largest suction-pressure drift (fraction "
                                                     "per day, either sign)")
    cooler_ambient_gain: tuple[float, float] = Field(
        (0.25, 0.45), description="degrees F of interstage-cooler outlet per degree F of ambient")
    hot_spells_per_basin_day: float = Field(0.03, ge=0, le=1)
    hot_spell_f: tuple[float, float] = Field((15.0, 20.0), description="ambient rise, F")
    hot_spell_days: tuple[float, float] = (2.0, 5.0)
    stuck_sensors_per_unit_day: float = Field(0.015, ge=0, le=2,
                                              description="transmitters that freeze on a value")
    stuck_hours: tuple[float, float] = (6.0, 96.0)
    dropouts_per_unit_day: float = Field(0.03, ge=0, le=5,
                                         description="channels that report null for a stretch")
    dropout_hours: tuple[float, float] = (1.0, 36.0)
    shut_ins_per_unit_day: float = Field(0.004, ge=0, le=1,
                                         description="units shut in for days (no gas to move)")
    shut_in_days: tuple[float, float] = (2.0, 6.0)
    missing_channel_unit_share: float = Field(0.1, ge=0, le=1,
                                              description="units without one or two optional "
                                                          "instruments (channel always null)")
    fault_days: tuple[float, float] = Field((4.0, 12.0),
                                            description="onset-to-failure duration of a fault")
    fault_shape_weights: tuple[float, float, float] = Field(
        (0.4, 0.3, 0.3), description="shares of gradual, step and accelerating faults")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> FieldConfig:
        for name in ("suction_swing", "line_swing", "swing_period_days", "cooler_ambient_gain",
                     "hot_spell_f", "hot_spell_days", "stuck_hours", "dropout_hours",
                     "shut_in_days", "fault_days"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")
        for name in ("swing_period_days", "hot_spell_days", "stuck_hours", "dropout_hours",
                     "shut_in_days", "fault_days"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be longer than zero")
        w = self.fault_shape_weights
        if min(w) < 0 or sum(w) <= 0:
            raise ValueError("fault_shape_weights must be non-negative with a positive sum")
        return self


class SimulationConfig(BaseModel):
    """One simulation run. Same config (including ``seed``) -> byte-identical output files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compressors: int = Field(ge=1, le=100_000)
    days: int = Field(ge=1, le=366)
    seed: int = Field(0, ge=0, lt=2**63)
    start: datetime = DEFAULT_START
    out: Path
    organizations: int | None = Field(None, ge=1, le=200,
                                      description="default: min(4, compressors)")
    fault_share: float = Field(0.10, ge=0, le=1)
    dirty: DirtyConfig | None = Field(default_factory=DirtyConfig,
                                      description="None = clean data, no defects")
    field: FieldConfig | None = Field(default_factory=FieldConfig,
                                      description="None = calm: speed carries the load, flow "
                                                  "stays flat, no nuisance events")
    planned_shutdowns_per_unit_day: float = Field(0.04, ge=0, le=2)
    cycling_unit_share: float = Field(0.2, ge=0, le=1,
                                      description="units that start and stop on process "
                                                  "conditions (low suction and similar)")
    cycling_stops_per_day: float = Field(0.6, ge=0, le=12)
    overwrite: bool = Field(False, description="replace a previous run's files in ``out``")

    @field_validator("start")
    @classmethod
    def _utc_on_grid(cls, v: datetime) -> datetime:
        """Naive datetimes are taken as UTC; the start is floored to the 10-minute grid."""
        v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        floored = v.replace(second=0, microsecond=0)
        return floored - timedelta(minutes=floored.minute % CADENCE_MINUTES)

    @property
    def org_count(self) -> int:
        """Organizations actually generated."""
        return min(self.organizations or 4, self.compressors)

    @property
    def dirt(self) -> DirtyConfig:
        """The defect rates in effect (all zero for a clean run)."""
        return self.dirty if self.dirty is not None else DirtyConfig.none()

    @property
    def end(self) -> datetime:
        """End of the window (exclusive)."""
        return self.start + timedelta(days=self.days)
