"""Payload models of the alert lifecycle, shared by workflows, activities, the CLI and the web
server. Side-effect free, so workflows import it through ``imports_passed_through()``; all
fields are added compatibly (with defaults) so running workflows keep decoding their history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["warning", "critical"]
ConditionState = Literal["active", "cleared"]
AckState = Literal["unacknowledged", "acknowledged"]
AlertStateName = Literal["open", "acknowledged", "cleared_unacknowledged", "resolved"]
AckChannel = Literal["link", "cli", "api", "web"]


class AlertState(BaseModel):
    """The current state of one alert, as its workflow knows it (the query's answer)."""

    model_config = ConfigDict(extra="ignore")

    alert_id: str
    workflow_id: str
    org_id: str
    compressor_id: str
    site_id: str
    rule_id: str
    metric: str
    value: float
    threshold: float
    severity: Severity
    condition_state: ConditionState = "active"
    ack_state: AckState = "unacknowledged"
    state: AlertStateName = "open"
    breach_hour: datetime
    last_breach_hour: datetime | None = None
    opened_at: datetime
    escalated_at: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    ack_channel: str | None = None
    ack_comment: str | None = None
    cleared_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolve_reason: str | None = None
    rule_set_id: int | None = None
    rule_version: int | None = None
    escalation_delay_hours: float = 4.0
    diagnosis: str = ""


class AckRequest(BaseModel):
    """A technician acknowledges an alert (update ``acknowledge`` or signal ``ack_requested``).

    ``request_id`` makes it idempotent: the same link confirmed twice is one acknowledgement.
    """

    org_id: str
    by: str = Field(min_length=1, max_length=200)
    channel: AckChannel = "cli"
    comment: str | None = Field(default=None, max_length=2000)
    request_id: str = Field(min_length=1, max_length=200)
    requested_at: datetime | None = None


class ResolveRequest(BaseModel):
    """Someone resolves an alert by hand, with a reason (update ``resolve``)."""

    org_id: str
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    request_id: str = Field(min_length=1, max_length=200)


Audience = Literal["technicians", "technicians_and_supervisors", "all_notified"]


class NotifyRequest(BaseModel):
    """One notification step of one alert (activity ``notify``).

    ``step`` is unique per alert ("opened", "escalated", "reminder-2", "resolved", ...): the
    activity delivers each (alert, step, contact, channel) at most once, even when retried.
    """

    alert: AlertState
    step: str
    audience: Audience
    event: Literal["opened", "escalated", "severity_raised", "reminder", "cleared", "resolved"]


class NotifyResult(BaseModel):
    """What a notify activity did."""

    delivered: int = 0
    failed: int = 0
    recipients: list[str] = Field(default_factory=list)
