"""What rule evaluation returns: breaches and clears.

Kept in its own side-effect-free module so that Temporal workflows can import these payload
models through ``workflow.unsafe.imports_passed_through()``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["warning", "critical"]


class Breach(BaseModel):
    """A rule fired for one compressor at one hour (persistence already satisfied)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    org_id: str
    compressor_id: str
    site_id: str
    rule_id: str
    metric: str
    value: float | None       # None for a data-missing breach: there is no observed value
    threshold: float | None
    severity: Severity
    hour: datetime
    rule_set_id: int | None = None
    rule_version: int | None = None
    escalation_delay_hours: float = 4.0
    diagnosis: str = ""


class Clear(BaseModel):
    """A rule's condition has been back to normal for its required number of hours."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    org_id: str
    compressor_id: str
    rule_id: str
    metric: str
    value: float | None
    hour: datetime
    rule_set_id: int | None = None
    rule_version: int | None = None
