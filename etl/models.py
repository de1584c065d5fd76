"""Results of the ETL stages: typed, serialisable models (pydantic) so the Temporal pipeline
workflow can pass them between activities with the pydantic data converter."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BronzeResult(_Model):
    """What :func:`etl.bronze.bronze_ingest` appended (``batch_id`` 0 and no files: nothing new)."""

    batch_id: int = 0
    files: int = 0
    rows: int = 0
    skipped_files: list[str] = Field(default_factory=list)  # unreadable, left in landing


class SilverResult(_Model):
    """What :func:`etl.silver.silver_transform` did for the bronze batches it owed."""

    batches: list[int] = Field(default_factory=list)
    rows_in: int = 0
    rows_valid: int = 0
    duplicates: int = 0
    late: int = 0
    outliers: int = 0
    quarantined: dict[str, int] = Field(default_factory=dict)  # reason -> rows

    @property
    def rows_quarantined(self) -> int:
        """Rows sent to quarantine, over every reason."""
        return sum(self.quarantined.values())


class GoldResult(_Model):
    """What :func:`etl.gold.gold_features` recomputed."""

    batches: list[int] = Field(default_factory=list)
    rows_written: int = 0      # gold rows added or changed
    rows_unchanged: int = 0    # recomputed but identical (nothing written)


class ChangedRange(_Model):
    """Hours of one compressor whose aggregates changed in PostgreSQL: rule evaluation only
    needs to look at ``first_hour`` .. ``last_hour`` (inclusive) of this compressor."""

    org_id: str
    compressor_id: str
    first_hour: datetime
    last_hour: datetime
    rows: int


class AggregatesResult(_Model):
    """What :func:`etl.aggregates.upsert_aggregates` changed in PostgreSQL."""

    batches: list[int] = Field(default_factory=list)
    rows_staged: int = 0
    rows_upserted: int = 0   # inserted or actually changed (guarded upsert)
    changed: list[ChangedRange] = Field(default_factory=list)


class QualityResult(_Model):
    """What :func:`etl.quality.quality_checks` recorded."""

    checks: int = 0
    failed: int = 0


class EtlRunReport(_Model):
    """One pipeline run, as recorded in ``etl_runs`` and printed on one line."""

    run_id: str
    files: int
    rows_in: int
    rows_quarantined: int
    rows_late: int
    duplicates: int
    hours_upserted: int
    seconds: float
    quarantined: dict[str, int] = Field(default_factory=dict)
    changed: list[ChangedRange] = Field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        return (f"etl {self.run_id}: {self.files} files, {self.rows_in} rows in, "
                f"{self.rows_quarantined} quarantined, {self.duplicates} duplicates, "
                f"{self.rows_late} late, {self.hours_upserted} hours upserted, "
                f"{self.seconds:.1f} s")
