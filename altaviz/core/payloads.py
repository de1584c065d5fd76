"""Payload models that cross Temporal: rule results, the alert lifecycle and the hourly pipeline.

Shared by workflows, activities, the CLI and the web server, so they live in the core. The module
is side-effect free, so workflows import it through ``imports_passed_through()``; fields are
added compatibly (with defaults) so running workflows keep decoding their history, and every
model ignores fields it does not know (``extra="ignore"``), so during a rolling upgrade an older
worker still decodes what a newer one wrote.
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


class UnitStop(BaseModel):
    """When a unit stopped, from its 10-minute readings: the first reading under the stop
    rule's limit after the last one above it, its speed, and the last discharge temperature
    read (hottest stage) while the unit ran. Carried by a stop rule's breach and its alert."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    stopped_at: datetime
    speed_rpm: float | None = None
    discharge_temp_f: float | None = None


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
    value: float | None          # None for a data-missing alert
    threshold: float | None
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
    #: The severity of the breach that ``threshold`` belongs to. After an escalation the alert
    #: is critical while its threshold is still the warning limit; messages must say so.
    threshold_severity: Severity | None = None
    #: Set on the notification sent when a silence or maintenance window stops holding the
    #: alert back: held from ``held_since`` to ``held_until`` (messages show the time elapsed).
    held_since: datetime | None = None
    held_until: datetime | None = None
    #: A stop rule's alert: when and how the unit stopped (from the opening breach).
    stop: UnitStop | None = None


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
    #: The alert the requester saw; when set, a request reaching a newer alert of the same
    #: workflow id (the old one was resolved meanwhile) is rejected instead of applied to it.
    alert_id: str | None = None


class ResolveRequest(BaseModel):
    """Someone resolves an alert by hand, with a reason (update ``resolve``)."""

    org_id: str
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)
    request_id: str = Field(min_length=1, max_length=200)
    #: As in :class:`AckRequest`: guards against resolving a newer alert by mistake.
    alert_id: str | None = None


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


class PlannedContact(BaseModel):
    """A person a step may reach, and the channels (URL schemes, never URLs) to reach them by.

    URLs stay in PostgreSQL: they often carry credentials and must not enter workflow history.
    """

    contact_id: str
    role: str
    channels: list[str] = Field(default_factory=list)


class DeliveryPlan(BaseModel):
    """Who a notification step goes to (activity ``plan_notification``).

    ``recipients`` are the step's audience; ``levels`` every active contact of the site by
    role, for falling back along ``chain`` when someone cannot be reached; ``fallback_contact``
    the organization's last resort (None when its policy names none, or it is inactive).
    """

    recipients: list[PlannedContact] = Field(default_factory=list)
    levels: dict[str, list[PlannedContact]] = Field(default_factory=dict)
    chain: list[str] = Field(default_factory=list)
    fallback_contact: PlannedContact | None = None


class DeliveryTarget(BaseModel):
    """One (alert, step, contact, channel) delivery (activity ``deliver``).

    ``note`` is added to the message, e.g. why a fallback person receives it.
    """

    alert: AlertState
    step: str
    event: str
    contact_id: str
    channel: str
    note: str = ""


class DeliveryOutcome(BaseModel):
    """What ``deliver`` did: ``sent`` now, or ``skipped`` because it was sent before."""

    status: Literal["sent", "skipped"] = "sent"


class DeliveryFailure(BaseModel):
    """A step that did not reach everyone it should have (activity ``record_delivery_failure``).

    ``unreached`` maps each contact to its channels' last errors; ``fallback`` lists who was
    told instead; ``nobody_reached`` is true when no one at all got the step.
    """

    alert: AlertState
    step: str
    unreached: dict[str, dict[str, str]] = Field(default_factory=dict)
    fallback: list[str] = Field(default_factory=list)
    reason: str = ""
    nobody_reached: bool = False
    occurred_at: datetime | None = None


class NotifyStepResult(BaseModel):
    """What ``NotifyStepWorkflow`` did for one step."""

    reached: list[str] = Field(default_factory=list)
    unreached: list[str] = Field(default_factory=list)
    fallback: list[str] = Field(default_factory=list)


# --- What rule evaluation returns: breaches and clears ----------------------------------------

class Breach(BaseModel):
    """A rule fired for one compressor at one hour (persistence already satisfied)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

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
    #: Set on a stop rule's breach (``inhibits:``) when the 10-minute readings show the stop.
    stop: UnitStop | None = None


class Clear(BaseModel):
    """A rule's condition has been back to normal for its required number of hours."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    org_id: str
    compressor_id: str
    rule_id: str
    metric: str
    value: float | None
    hour: datetime
    rule_set_id: int | None = None
    rule_version: int | None = None


# --- Alert workflow internals (all fields defaulted) --------------------------------------------

AlertEventType = Literal[
    "opened", "breach_repeated", "severity_raised", "escalated", "reminder", "acknowledged",
    "ack_rejected", "cleared", "reactivated", "resolved", "notify_failed", "delivery_failed",
    "reconciled", "notify_held", "unsilenced",
]


class AlertCarry(BaseModel):
    """What an alert workflow carries across continue-as-new (its whole memory)."""

    state: AlertState
    seq: int = 0
    critical_since: datetime | None = None
    reminders_sent: int = 0
    notified_steps: list[str] = Field(default_factory=list)
    request_ids: list[str] = Field(default_factory=list)
    pending_breaches: list[Breach] = Field(default_factory=list)
    pending_clears: list[Clear] = Field(default_factory=list)
    pending_acks: list[AckRequest] = Field(default_factory=list)
    #: Notifications held back by a silence or maintenance window until ``held_until``, and
    #: when the last hold ended (the escalation delay counts from it).
    held_until: datetime | None = None
    held_since: datetime | None = None
    held_steps: list[str] = Field(default_factory=list)
    released_at: datetime | None = None
    #: Transitions not yet written to PostgreSQL, in order (the projection outbox).
    outbox: list[AlertTransition] = Field(default_factory=list)


class AlertInput(BaseModel):
    """Input of ``AlertWorkflow``: the opening breach, or the carried state of a previous run.

    ``reminder_minutes`` is passed in (not read from settings inside the workflow) so the
    workflow stays deterministic; 0 turns reminders off.
    """

    breach: Breach
    reminder_minutes: int = 60
    max_history_events: int = 5000
    carried: AlertCarry | None = None


class AlertTransition(BaseModel):
    """One transition to persist: the new current state plus the event that led to it.

    ``seq`` numbers the alert's transitions; the event key ``{alert_id}:{seq}`` makes a
    retried activity a no-op, and ``alert_history`` only moves forward (a late retry of an
    older transition never overwrites a newer state).
    """

    state: AlertState
    seq: int
    event_type: AlertEventType
    occurred_at: datetime
    actor: str | None = None
    details: dict[str, object] = Field(default_factory=dict)
    run_id: str | None = None


class OpenAlertResult(BaseModel):
    """What ``open_alert`` found: a new alert, one to resume, or a stale breach to drop."""

    status: Literal["opened", "resumed", "stale"]
    seq: int = 0
    state: AlertState | None = None
    reason: str = ""


# --- Hourly pipeline payloads ------------------------------------------------------------------


class PipelineInput(BaseModel):
    """Input of ``PipelineWorkflow``.

    ``hour`` is the hour to evaluate; None when run by the Schedule, which then picks the hour
    that ended before ``TemporalScheduledStartTime``. ``org_ids`` None means every organization.
    """

    hour: datetime | None = None
    #: Evaluate these hours too (a backfill or the demo's replay of history); ``hour`` is
    #: always included. Breaches and clears are reduced to the latest per compressor and rule.
    hours: list[datetime] | None = None
    org_ids: list[str] | None = None
    run_etl: bool = True
    reminder_minutes: int = 60
    batch_size: int = Field(default=100, ge=1, le=1000)
    #: Task queue of the ETL stage activities; None: the workflow's own queue followed by
    #: ``-etl`` (``altaviz.core.settings.etl_queue_of``), the default of ``ETL_TASK_QUEUE``.
    etl_task_queue: str | None = None


class EtlRequest(BaseModel):
    """Input of activity ``run_etl``."""

    hour: datetime


class EtlSummary(BaseModel):
    """What the ETL stage tells the pipeline workflow; ``changed_hours`` are re-evaluated.

    The ETL's own record of a run is ``etl.models.EtlRunReport``; this is the part of it the
    workflow needs, small enough for its history.
    """

    ran: bool = True
    run_id: str | None = None
    changed_hours: list[datetime] = Field(default_factory=list)
    detail: str = ""


EtlStageName = Literal["bronze", "silver", "gold", "aggregates", "quality"]


class EtlStageRequest(BaseModel):
    """Input of the ETL stage activities (``etl_bronze`` ... ``etl_quality``) and of
    ``etl_begin``: the run they belong to, recorded in ``etl_runs``."""

    run_id: str


class EtlStageResult(BaseModel):
    """What one ETL stage did, small enough for the pipeline's history.

    ``counts`` are the stage's figures that ``etl_runs`` records (files, rows_in,
    rows_quarantined, rows_late, duplicates, hours_upserted); ``retried`` says the stage ran
    on a retried attempt, so hours an earlier attempt committed may be unreported.
    """

    stage: EtlStageName
    counts: dict[str, int] = Field(default_factory=dict)
    retried: bool = False


class EtlEndRequest(BaseModel):
    """Input of ``etl_end``: the run's outcome, and the hour whose evaluation follows."""

    run_id: str
    hour: datetime
    stages: list[EtlStageResult] = Field(default_factory=list)
    error: str | None = None


class EvaluateRequest(BaseModel):
    """Input of activity ``evaluate_rules``: one organization, some hours."""

    org_id: str
    hours: list[datetime]


class HeldBreach(BaseModel):
    """A breach kept from opening an alert: its unit was in a maintenance window
    (``maintenance``) or stopped, the stop explaining it (``inhibited``)."""

    breach: Breach
    held_by: Literal["maintenance", "inhibited"]
    detail: str = ""


class Evaluation(BaseModel):
    """Breaches and clears of one organization's rule evaluation."""

    org_id: str
    breaches: list[Breach] = Field(default_factory=list)
    clears: list[Clear] = Field(default_factory=list)
    held: list[HeldBreach] = Field(default_factory=list)


class BreachBatch(BaseModel):
    """Input of activity ``start_or_update_alerts``."""

    breaches: list[Breach]
    reminder_minutes: int = 60


class ClearBatch(BaseModel):
    """Input of activity ``signal_clears``."""

    clears: list[Clear]


class DispatchResult(BaseModel):
    """How many workflows a dispatch activity reached (and how many it skipped)."""

    sent: int = 0
    skipped: int = 0


class ReconcileResult(BaseModel):
    """What one reconciliation of open alerts and running alert workflows did."""

    checked: int = 0
    #: Alert ids whose row was open while no workflow ran for them (closed).
    closed: list[str] = Field(default_factory=list)
    #: Alert ids of running workflows that had no row (the row written from the workflow).
    reattached: list[str] = Field(default_factory=list)


class PipelineResult(BaseModel):
    """Summary of one pipeline run."""

    hour: datetime
    etl: EtlSummary | None = None
    organizations: int = 0
    breaches: int = 0
    clears: int = 0
    alerts_signalled: int = 0
    breaches_skipped: int = 0
    clears_signalled: int = 0
