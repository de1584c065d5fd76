"""``AlertWorkflow``: one durable workflow per alert, from the first breach to its resolution.

Workflow id ``alert/{org}/{compressor}/{rule}`` (:func:`alert_workflow_id`): while an alert is
open every new breach of the same rule on the same compressor reaches the same workflow (the
pipeline uses signal-with-start), and once it is resolved and the workflow has completed a new
breach starts a new run, which is a new alert with its own ``alert_id`` (the workflow id plus
the opening breach hour).

The state keeps the condition (``active``/``cleared``) apart from the human side
(``unacknowledged``/``acknowledged``); the combined ``state`` is what people see.

PostgreSQL is a projection of the workflow, not a gate (``patched("projection-outbox")``):
each transition is appended to an ordered outbox in workflow state, with its search attributes
upserted in the same workflow task, and a background flusher writes the outbox with one
bounded activity (``record_transitions``: short timeout, two attempts, idempotent by the
transition's ``seq``). When the database is away the flusher keeps the outbox and tries again
on a durable timer (30 s doubling to 5 min) instead of retrying inside the worker, so timers,
escalations, notifications and acknowledgements never wait for it, and an outage costs a few
history events per attempt, not a steady stream of workflow-task heartbeats. Continue-as-new
carries the outbox: it lets a flush under way finish (two short attempts at most) but never
waits for a failed one's retry timer; a resolved run ends only once its outbox is written.
Runs started before the patch keep writing each transition with a *local* activity before
going on.

Each notification step is its own child workflow (``workflows.notify``), started and not
awaited, with parent-close policy ``ABANDON``: a channel retried for minutes, or a
recipient replaced by the next level of the escalation chain, never holds up the alert's
requests and timers, and a step outlives a run that continues as new. A resolved alert's run
ends once its last steps have.

Concurrency model: signal and update handlers only *queue* requests; the main loop applies
them one at a time, in arrival order, between timers. Update handlers wait until the main loop
has applied their request (not until it is written to PostgreSQL) and answer with the
resulting state.

Determinism: only ``workflow.now()`` and durable timers; payload models come from side-effect
free modules imported through ``imports_passed_through``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from altaviz.core.payloads import (
        AckRequest,
        AlertCarry,
        AlertEventType,
        AlertInput,
        AlertState,
        AlertTransition,
        Audience,
        Breach,
        Clear,
        NotifyRequest,
        NotifyResult,
        OpenAlertResult,
        ResolveRequest,
    )
    from altaviz.core.silences import HoldDecision, HoldQuery
    from workflows import SEARCH_ATTRIBUTES
    from workflows.notify import WORKFLOW_NAME as NOTIFY_WORKFLOW
    from workflows.notify import notify_workflow_id

#: Names other components use to talk to an alert workflow.
WORKFLOW_NAME = "AlertWorkflow"
SIGNAL_BREACH = "breach"
SIGNAL_CLEAR = "clear"
SIGNAL_ACK = "ack_requested"
#: A silence of the alert's organization was added or expired: check the hold now.
SIGNAL_HOLDS = "holds_changed"
UPDATE_ACK = "acknowledge"
UPDATE_RESOLVE = "resolve"
QUERY_STATE = "state"

SA_ORG = SearchAttributeKey.for_keyword("AltavizOrg")
SA_COMPRESSOR = SearchAttributeKey.for_keyword("AltavizCompressor")
SA_SITE = SearchAttributeKey.for_keyword("AltavizSite")
SA_SEVERITY = SearchAttributeKey.for_keyword("AltavizSeverity")
SA_STATE = SearchAttributeKey.for_keyword("AltavizState")
SA_RULE = SearchAttributeKey.for_keyword("AltavizRule")
SA_ALERT_ID = SearchAttributeKey.for_keyword("AltavizAlertId")

_DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                        maximum_interval=timedelta(minutes=1),
                        non_retryable_error_types=["TerminalError", "TenantError"])
_NOTIFY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                            maximum_interval=timedelta(minutes=5), maximum_attempts=20)
_MAX_REMEMBERED_REQUESTS = 500
_RANK = {"warning": 0, "critical": 1}

#: ``workflow.patched`` ids: each names a change of the command sequence (see
#: docs/OPERATIONS.md, "Upgrading").
PATCH_NOTIFY_CHILD = "notify-step-child-workflow"
PATCH_RESUME_CRITICAL = "resume-critical-reminders"
PATCH_HOLDS = "silences-and-maintenance-holds"
PATCH_HOLD_SIGNAL = "holds-changed-signal"
PATCH_PROJECTION = "projection-outbox"

#: Activity writing the outbox (a batch of transitions, in order) to PostgreSQL.
RECORD_TRANSITIONS = "record_transitions"
#: The flush: a short, bounded regular activity (retries are the server's, no history events);
#: when it finally fails the outbox waits for the next durable retry timer.
_FLUSH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           maximum_attempts=2)
_FLUSH_TIMEOUT = timedelta(seconds=20)
#: Durable retry timer of a failed flush: doubles from the first value up to the second.
FLUSH_BACKOFF = (timedelta(seconds=30), timedelta(minutes=5))
#: At most this many transitions per flush (a long outage's outbox goes in several).
_FLUSH_BATCH = 100
#: Bounded database reads of the patched workflow (opening, silence check).
_DB_BOUNDED = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                          maximum_attempts=2,
                          non_retryable_error_types=["TerminalError", "TenantError"])

#: Activity asked before every notification whether a silence or window holds it back.
CHECK_HOLD = "check_silence"
#: While held back, the hold is checked again this often, so a silence expired early (or a
#: window cut short) releases the alert within this time, not at the end first planned.
HOLD_RECHECK = timedelta(minutes=15)


def alert_workflow_id(org_id: str, compressor_id: str, rule_id: str) -> str:
    """The workflow id of the alerts of one rule on one compressor."""
    return f"alert/{org_id}/{compressor_id}/{rule_id}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def alert_id_for(workflow_id: str, breach_hour: datetime) -> str:
    """The id of the alert opened by a breach at ``breach_hour`` (unique per alert)."""
    return f"{workflow_id}/{_utc(breach_hour):%Y%m%dT%H%MZ}"


def workflow_id_of(alert_id: str) -> str:
    """The workflow id of an alert, from its id (:func:`alert_id_for` appends the hour)."""
    return alert_id.rsplit("/", 1)[0]


def _non_retryable(exc: FailureError) -> bool:
    """Whether a failed (local) activity failed for good: a local activity's last failure
    comes back as the application error itself, a regular one's wrapped in ActivityError."""
    cause = exc.cause if isinstance(exc, ActivityError) else exc
    return isinstance(exc, CancelledError) or (
        isinstance(cause, ApplicationError) and cause.non_retryable)


def search_attribute_pairs(state: AlertState) -> list[SearchAttributePair[str]]:
    """Search attribute values describing an alert (used at start and for upserts)."""
    return [
        SearchAttributePair(SA_ORG, state.org_id),
        SearchAttributePair(SA_COMPRESSOR, state.compressor_id),
        SearchAttributePair(SA_SITE, state.site_id),
        SearchAttributePair(SA_SEVERITY, state.severity),
        SearchAttributePair(SA_STATE, state.state),
        SearchAttributePair(SA_RULE, state.rule_id),
        SearchAttributePair(SA_ALERT_ID, state.alert_id),
    ]


def initial_state(breach: Breach, workflow_id: str, now: datetime) -> AlertState:
    """The state of an alert just opened by ``breach`` (rule version pinned from it)."""
    hour = _utc(breach.hour)
    return AlertState(
        alert_id=alert_id_for(workflow_id, hour), workflow_id=workflow_id,
        org_id=breach.org_id, compressor_id=breach.compressor_id, site_id=breach.site_id,
        rule_id=breach.rule_id, metric=breach.metric, value=breach.value,
        threshold=breach.threshold, threshold_severity=breach.severity, severity=breach.severity,
        breach_hour=hour, last_breach_hour=hour, opened_at=now, rule_set_id=breach.rule_set_id,
        rule_version=breach.rule_version,
        escalation_delay_hours=breach.escalation_delay_hours, diagnosis=breach.diagnosis,
        stop=breach.stop)


@workflow.defn(name=WORKFLOW_NAME)
class AlertWorkflow:
    """The lifecycle of one alert (see the module docstring)."""

    @workflow.init
    def __init__(self, inp: AlertInput) -> None:
        carried = inp.carried
        self._reminder_minutes = max(0, inp.reminder_minutes)
        self._max_events = inp.max_history_events
        self._opened = carried is not None
        self._stale = False
        self._next_alert: Breach | None = None
        if carried is None:
            wid = workflow.info().workflow_id
            self._state = initial_state(inp.breach, wid, workflow.now())
            self._seq = 0
            self._critical_since: datetime | None = (
                self._state.opened_at if self._state.severity == "critical" else None)
            self._reminders_sent = 0
            self._notified: list[str] = []
            self._request_ids: list[str] = []
            self._breaches: list[Breach] = []
            self._clears: list[Clear] = []
            self._acks: list[AckRequest] = []
        else:
            self._state = carried.state
            self._seq = carried.seq
            self._critical_since = carried.critical_since
            self._reminders_sent = carried.reminders_sent
            self._notified = list(carried.notified_steps)
            self._request_ids = list(carried.request_ids)
            self._breaches = list(carried.pending_breaches)
            self._clears = list(carried.pending_clears)
            self._acks = list(carried.pending_acks)
        self._resolves: list[ResolveRequest] = []
        # Silences and maintenance windows (see _held): decided by an activity, so replay
        # and restarts see the same answer; off until run() knows whether the patch applies.
        self._holds_on = False
        self._held_until = carried.held_until if carried is not None else None
        self._held_since = carried.held_since if carried is not None else None
        self._held_steps = list(carried.held_steps) if carried is not None else []
        self._released_at = carried.released_at if carried is not None else None
        self._hold_recheck: datetime | None = None
        self._holds_changed = False
        self._sa_sent: dict[str, str] = {}
        # The projection outbox (see the module docstring): transitions not yet written.
        self._projection = False
        self._outbox: list[AlertTransition] = (
            list(carried.outbox) if carried is not None else [])
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = False
        self._flush_waiting = False
        self._steps: list[workflow.ChildWorkflowHandle[Any, Any]] = []

    # --- the main loop ----------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: AlertInput) -> AlertState:
        """Open the alert, then apply requests and timers until it is resolved."""
        self._holds_on = workflow.patched(PATCH_HOLDS)
        self._projection = workflow.patched(PATCH_PROJECTION)
        if self._projection:
            # runs beside the main loop: nothing the alert does waits for PostgreSQL
            self._flusher = asyncio.create_task(self._flush_outbox())
        if not self._opened:
            if not await self._open():
                return await self._finish(inp)
        self._upsert_search_attributes()
        while self._state.state != "resolved":
            if self._has_requests():
                await self._apply_next()
                continue
            if self._continue_as_new_due():
                # a flush under way is let finish (at most its two short attempts); one
                # waiting for its retry timer never holds the new run back: the outbox goes
                # along
                await workflow.wait_condition(
                    lambda: (workflow.all_handlers_finished() and self._flush_idle())
                    or self._has_requests())
                if self._has_requests():
                    continue
                workflow.continue_as_new(self._carry_input(inp))
            kind, due = self._next_timer()
            if due is None:
                await workflow.wait_condition(
                    lambda: self._has_requests() or self._continue_as_new_due())
                continue
            remaining = due - workflow.now()
            if remaining > timedelta(0):
                try:
                    await workflow.wait_condition(self._has_requests, timeout=remaining,
                                                  timeout_summary=kind)
                    continue
                except TimeoutError:
                    pass
            if self._has_requests():
                # Requests that arrived with the timer (e.g. an ack queued while no worker
                # ran) go first: the next pass decides whether the timer still applies.
                continue
            await self._fire(kind)
        return await self._finish(inp)

    async def _open(self) -> bool:
        self._seq = 1
        opening = self._transition("opened", actor="rules", details=self._breach_details(None))
        if self._projection:
            result = await self._open_bounded(opening)
        else:
            result = await workflow.execute_local_activity(
                "open_alert", opening, result_type=OpenAlertResult,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=_DB_RETRY)
        if result.status == "stale":
            self._stale = True
            self._state.state = "resolved"
            workflow.logger.info("breach already covered, no new alert: %s", result.reason)
            return False
        self._opened = True
        if result.status == "resumed" and result.state is not None:
            self._seq = result.seq
            self._state = result.state
            if workflow.patched(PATCH_RESUME_CRITICAL):
                self._resume_reminders()
            return True
        if self._projection:
            self._upsert_search_attributes()
        await self._notify("opened", "technicians", "opened")
        return True

    async def _open_bounded(self, opening: AlertTransition) -> OpenAlertResult:
        """``open_alert`` decides whether the breach opens a new alert (it may be stale, or
        resume a stored one), so the opening needs PostgreSQL: bounded attempts, and with the
        database away a durable backoff timer between them rather than retries in the worker
        (the history stays small however long the outage)."""
        delay, longest = FLUSH_BACKOFF
        while True:
            try:
                return await workflow.execute_local_activity(
                    "open_alert", opening, result_type=OpenAlertResult,
                    start_to_close_timeout=timedelta(seconds=15), retry_policy=_DB_BOUNDED)
            except FailureError as exc:
                if _non_retryable(exc):
                    raise
                workflow.logger.warning("alert %s: cannot open yet (%s); again in %s",
                                        self._state.alert_id, exc.cause or exc, delay)
            await workflow.sleep(delay, summary="open_retry")
            delay = min(delay * 2, longest)

    async def _finish(self, inp: AlertInput) -> AlertState:
        # Let queued handlers settle; a breach newer than this alert becomes a new alert.
        # The run also ends only once its notification steps have: the resolution is then
        # delivered (or recorded as a delivery failure) when the alert shows as closed in
        # Temporal, and no step outlives its parent (which stalls the time-skipping test
        # server's clock). Requests arriving meanwhile are still applied.
        while True:
            await workflow.wait_condition(
                lambda: (workflow.all_handlers_finished()
                         and all(h.done() for h in self._steps) and not self._outbox)
                or self._has_requests() or self._outbox_outgrows_run())
            if self._has_requests():
                await self._apply_next()
                continue
            if self._outbox_outgrows_run():
                # a long outage after the resolution: the next run goes on flushing
                workflow.continue_as_new(self._carry_input(inp))
            break
        if self._next_alert is not None:
            workflow.continue_as_new(AlertInput(
                breach=self._next_alert, reminder_minutes=self._reminder_minutes,
                max_history_events=self._max_events))
        return self._state

    # --- handlers: queue only ---------------------------------------------------------------

    @workflow.signal(name=SIGNAL_BREACH)
    def breach(self, breach: Breach) -> None:
        """A rule fired again for this compressor (also the signal of signal-with-start)."""
        self._breaches.append(breach)

    @workflow.signal(name=SIGNAL_CLEAR)
    def clear(self, clear: Clear) -> None:
        """The condition has been normal for the rule's hysteresis hours."""
        self._clears.append(clear)

    @workflow.signal(name=SIGNAL_ACK)
    def ack_requested(self, req: AckRequest) -> None:
        """Acknowledgement as a signal: accepted by the server even with no worker running.

        Same effect as the ``acknowledge`` update once a worker processes it; a request from
        another organization (or for another alert) is recorded as ``ack_rejected`` and
        changes nothing.
        """
        self._acks.append(req)

    @workflow.signal(name=SIGNAL_HOLDS)
    def holds_changed(self) -> None:
        """A silence was added or expired early (``altaviz silence``): a held alert re-checks
        its hold at once rather than at the next 15-minute re-check. A signal, so it is
        accepted with no worker running and applied when one comes back."""
        self._holds_changed = True

    @workflow.update(name=UPDATE_ACK)
    async def acknowledge(self, req: AckRequest) -> AlertState:
        """Acknowledge the alert (stops escalation; resolves a cleared one)."""
        if req.request_id not in self._request_ids:
            self._acks.append(req)
            await workflow.wait_condition(lambda: req.request_id in self._request_ids)
        return self._state.model_copy()

    @acknowledge.validator
    def _validate_acknowledge(self, req: AckRequest) -> None:
        if req.request_id in self._request_ids:
            return
        reason = self._ack_rejection(req)
        if reason:
            raise ValueError(reason)

    @workflow.update(name=UPDATE_RESOLVE)
    async def resolve(self, req: ResolveRequest) -> AlertState:
        """Resolve the alert by hand, with a reason."""
        if req.request_id not in self._request_ids:
            self._resolves.append(req)
            await workflow.wait_condition(lambda: req.request_id in self._request_ids)
        return self._state.model_copy()

    @resolve.validator
    def _validate_resolve(self, req: ResolveRequest) -> None:
        if req.request_id in self._request_ids:
            return
        reason = self._common_rejection(req.org_id, req.alert_id)
        if reason:
            raise ValueError(reason)

    @workflow.query(name=QUERY_STATE)
    def state(self) -> AlertState:
        """The current state of the alert."""
        return self._state

    def _common_rejection(self, org_id: str, alert_id: str | None) -> str | None:
        s = self._state
        if org_id != s.org_id:
            return (f"rejected: organization {org_id!r} may not act on alert {s.alert_id} "
                    f"(it belongs to another organization)")
        if alert_id is not None and alert_id != s.alert_id:
            return (f"rejected: alert {alert_id} is no longer open here (this workflow now "
                    f"holds alert {s.alert_id})")
        if self._stale:
            return f"rejected: no alert was opened by workflow {s.workflow_id} in this run"
        if s.state == "resolved":
            return f"rejected: alert {s.alert_id} is already resolved"
        return None

    def _ack_rejection(self, req: AckRequest) -> str | None:
        reason = self._common_rejection(req.org_id, req.alert_id)
        if reason is None and self._state.ack_state == "acknowledged":
            s = self._state
            reason = (f"rejected: alert {s.alert_id} was already acknowledged by "
                      f"{s.acknowledged_by} at {s.acknowledged_at}")
        return reason

    # --- applying requests ------------------------------------------------------------------

    def _has_requests(self) -> bool:
        return bool(self._breaches or self._clears or self._acks or self._resolves
                    or self._holds_changed)

    async def _apply_next(self) -> None:
        # Humans first: an acknowledgement queued together with a breach or a timer wins.
        if self._acks:
            await self._apply_ack(self._acks.pop(0))
        elif self._resolves:
            await self._apply_resolve(self._resolves.pop(0))
        elif self._breaches:
            await self._apply_breach(self._breaches.pop(0))
        elif self._clears:
            await self._apply_clear(self._clears.pop(0))
        elif self._holds_changed:
            self._holds_changed = False
            # only a held alert has anything to re-check (every notification asks anyway)
            if (self._holds_on and self._held_until is not None
                    and self._state.state != "resolved"
                    and workflow.patched(PATCH_HOLD_SIGNAL)):
                await self._hold_end()

    def _remember(self, request_id: str) -> None:
        self._request_ids.append(request_id)
        del self._request_ids[:-_MAX_REMEMBERED_REQUESTS]

    async def _apply_ack(self, req: AckRequest) -> None:
        if req.request_id in self._request_ids:
            return
        s = self._state
        reason = self._ack_rejection(req)
        if reason is not None:
            foreign = req.org_id != s.org_id or (req.alert_id not in (None, s.alert_id))
            if not foreign:
                # Already acknowledged or resolved: the alert already says so; nothing to add.
                self._remember(req.request_id)
                return
            self._seq += 1
            await self._record("ack_rejected", actor=req.by, details={
                "reason": reason, "request_org": req.org_id, "channel": req.channel,
                "request_id": req.request_id})
            self._remember(req.request_id)
            return
        now = workflow.now()
        s.ack_state = "acknowledged"
        s.acknowledged_at = _utc(req.requested_at) if req.requested_at else now
        s.acknowledged_by = req.by
        s.ack_channel = req.channel
        s.ack_comment = req.comment
        cleared = s.condition_state == "cleared"
        s.state = "acknowledged"
        self._seq += 1
        await self._record("acknowledged", actor=req.by, details={
            "channel": req.channel, "comment": req.comment, "request_id": req.request_id})
        if cleared:
            await self._resolve_now(by=req.by, reason="acknowledged after the condition cleared")
        self._remember(req.request_id)

    async def _apply_resolve(self, req: ResolveRequest) -> None:
        if req.request_id in self._request_ids:
            return
        if self._common_rejection(req.org_id, req.alert_id) is None:
            await self._resolve_now(by=req.by, reason=req.reason, request_id=req.request_id)
        self._remember(req.request_id)

    async def _resolve_now(self, *, by: str, reason: str, request_id: str | None = None) -> None:
        s = self._state
        s.state = "resolved"
        s.resolved_at = workflow.now()
        s.resolved_by = by
        s.resolve_reason = reason
        self._seq += 1
        details: dict[str, object] = {"reason": reason}
        if request_id:
            details["request_id"] = request_id
        await self._record("resolved", actor=by, details=details)
        await self._notify("resolved", "all_notified", "resolved")

    async def _apply_breach(self, b: Breach) -> None:
        s = self._state
        hour = _utc(b.hour)
        last = s.last_breach_hour or s.breach_hour
        if s.state == "resolved":
            # A newer breach after resolution is a new alert (after this run ends).
            if hour > last and (self._next_alert is None
                                or hour > _utc(self._next_alert.hour)):
                self._next_alert = b
            return
        raise_severity = _RANK[b.severity] > _RANK[s.severity]
        if hour <= last and not raise_severity:
            return  # the same (or an older) hour again: nothing new, nothing written
        if hour >= last:
            s.value, s.threshold, s.last_breach_hour = b.value, b.threshold, hour
            s.threshold_severity = b.severity
            if b.diagnosis:
                s.diagnosis = b.diagnosis
        details = self._breach_details(b)
        if s.condition_state == "cleared":
            s.condition_state = "active"
            s.cleared_at = None
            s.state = "acknowledged" if s.ack_state == "acknowledged" else "open"
            self._seq += 1
            await self._record("reactivated", actor="rules", details=details)
        if raise_severity:
            s.severity = "critical"
            self._critical_since = workflow.now()
            self._seq += 1
            await self._record("severity_raised", actor="rules", details=details)
            audience: Audience = ("technicians" if s.ack_state == "acknowledged"
                                  else "technicians_and_supervisors")
            await self._notify("severity-raised", audience, "severity_raised")
        elif hour > last:
            self._seq += 1
            await self._record("breach_repeated", actor="rules", details=details)

    async def _apply_clear(self, c: Clear) -> None:
        s = self._state
        if s.state == "resolved" or s.condition_state == "cleared":
            return
        if _utc(c.hour) <= (s.last_breach_hour or s.breach_hour):
            return  # older than the latest breach: the condition did not clear after it
        s.condition_state = "cleared"
        s.cleared_at = workflow.now()
        details: dict[str, object] = {"clear_hour": _utc(c.hour).isoformat(), "value": c.value}
        if s.ack_state == "acknowledged":
            self._seq += 1
            await self._record("cleared", actor="rules", details=details)
            await self._resolve_now(by="rules", reason="condition cleared")
        else:
            s.state = "cleared_unacknowledged"
            self._seq += 1
            await self._record("cleared", actor="rules", details=details)
            await self._notify("cleared", "all_notified", "cleared")

    # --- timers -----------------------------------------------------------------------------

    def _escalation_due(self) -> datetime | None:
        s = self._state
        if (s.severity == "warning" and s.ack_state == "unacknowledged"
                and s.condition_state == "active" and s.state == "open"):
            if self._holds_on:
                # Held back: nobody was told, so nobody can have failed to acknowledge; the
                # delay counts from the end of the hold.
                if self._held_until is not None:
                    return None
                start = max(s.opened_at, self._released_at or s.opened_at)
                return start + timedelta(hours=s.escalation_delay_hours)
            return s.opened_at + timedelta(hours=s.escalation_delay_hours)
        return None

    def _reminder_due(self) -> datetime | None:
        s = self._state
        if (self._reminder_minutes > 0 and s.severity == "critical" and s.state == "open"
                and self._critical_since is not None):
            step = timedelta(minutes=self._reminder_minutes)
            return self._critical_since + step * (self._reminders_sent + 1)
        return None

    def _resume_reminders(self) -> None:
        """A resumed critical alert keeps reminding on the cadence it had before (counted from
        when it became critical), and never repeats a reminder number already sent."""
        s = self._state
        if s.severity != "critical":
            self._critical_since = None
            return
        self._critical_since = _utc(s.escalated_at or s.opened_at)
        if self._reminder_minutes > 0:
            elapsed = workflow.now() - self._critical_since
            self._reminders_sent = max(0, int(elapsed / timedelta(minutes=self._reminder_minutes)))

    def _next_timer(self) -> tuple[str, datetime | None]:
        if self._holds_on and self._held_until is not None and self._state.state != "resolved":
            recheck = self._hold_recheck or workflow.now()
            due: list[tuple[datetime, str]] = [(min(self._held_until, recheck), "hold_end")]
            for kind, when in (("escalation", self._escalation_due()),
                               ("reminder", self._reminder_due())):
                if when is not None:
                    due.append((when, kind))
            when, kind = min(due)
            return kind, when
        escalation = self._escalation_due()
        if escalation is not None:
            return "escalation", escalation
        reminder = self._reminder_due()
        if reminder is not None:
            return "reminder", reminder
        return "", None

    async def _fire(self, kind: str) -> None:
        s = self._state
        if kind == "hold_end":
            await self._hold_end()
        elif kind == "escalation" and self._escalation_due() is not None:
            s.severity = "critical"
            s.escalated_at = workflow.now()
            self._critical_since = s.escalated_at
            self._seq += 1
            await self._record("escalated", actor="timer", details={
                "after_hours": s.escalation_delay_hours})
            await self._notify("escalated", "technicians_and_supervisors", "escalated")
        elif kind == "reminder" and self._reminder_due() is not None:
            # One reminder per firing, even after a long outage: skip the missed ones.
            assert self._critical_since is not None
            elapsed = workflow.now() - self._critical_since
            missed = int(elapsed / timedelta(minutes=self._reminder_minutes))
            self._reminders_sent = max(self._reminders_sent + 1, missed)
            n = self._reminders_sent
            self._seq += 1
            await self._record("reminder", actor="timer", details={"reminder": n})
            await self._notify(f"reminder-{n}", "technicians", "reminder")

    # --- side effects -----------------------------------------------------------------------

    def _transition(self, event_type: AlertEventType, *, actor: str | None,
                    details: dict[str, object]) -> AlertTransition:
        return AlertTransition(
            state=self._state.model_copy(), seq=self._seq, event_type=event_type,
            occurred_at=workflow.now(), actor=actor, details=details,
            run_id=workflow.info().run_id)

    def _breach_details(self, b: Breach | None) -> dict[str, object]:
        s = self._state
        d: dict[str, object] = {
            "hour": _utc(b.hour).isoformat() if b else s.breach_hour.isoformat(),
            "value": b.value if b else s.value,
            "threshold": b.threshold if b else s.threshold,
            "severity_of_breach": b.severity if b else s.severity,
        }
        if b is not None and b.rule_version != s.rule_version:
            d["breach_rule_version"] = b.rule_version  # the alert keeps its pinned version
        return d

    async def _record(self, event_type: AlertEventType, *, actor: str | None,
                      details: dict[str, object]) -> None:
        transition = self._transition(event_type, actor=actor, details=details)
        if self._projection:
            # the state changed in this workflow task: so do its search attributes, and the
            # write waits in the outbox for the flusher
            self._outbox.append(transition)
            self._upsert_search_attributes()
            return
        await workflow.execute_local_activity(
            "record_transition", transition,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=_DB_RETRY)
        self._upsert_search_attributes()

    async def _flush_outbox(self) -> None:
        """Write the outbox in order, a batch at a time; after a failed flush wait on a
        durable timer (doubling up to five minutes) and try again. Each transition leaves the
        outbox only once written; the writes are idempotent (event key ``alert:seq:type``,
        ``alert_history`` only moves forward), so a batch written twice (a flush that
        committed but did not report back, or one repeated after continue-as-new) is
        written once."""
        first, longest = FLUSH_BACKOFF
        delay = first
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox))
            batch = self._outbox[:_FLUSH_BATCH]
            self._flushing = True
            try:
                await workflow.execute_activity(
                    RECORD_TRANSITIONS, batch, start_to_close_timeout=_FLUSH_TIMEOUT,
                    retry_policy=_FLUSH_RETRY, summary=f"{len(batch)} transitions")
            except FailureError as exc:
                self._flushing = False
                if isinstance(exc, CancelledError):
                    raise
                workflow.logger.warning(
                    "alert %s: %d transitions not written yet (%s); again in %s",
                    self._state.alert_id, len(self._outbox), exc.cause or exc, delay)
                self._flush_waiting = True
                await workflow.sleep(delay, summary="flush_retry")
                self._flush_waiting = False
                delay = min(delay * 2, longest)
                continue
            self._flushing = False
            del self._outbox[:len(batch)]
            delay = first

    async def _notify(self, step: str, audience: Audience, event: Any,
                      alert: AlertState | None = None) -> None:
        if step in self._notified:
            return
        if self._holds_on and await self._held(step):
            return
        self._notified.append(step)
        req = NotifyRequest(alert=alert or self._state.model_copy(), step=step,
                            audience=audience, event=event)
        if workflow.patched(PATCH_NOTIFY_CHILD):
            try:
                self._steps.append(await workflow.start_child_workflow(
                    NOTIFY_WORKFLOW, req, id=notify_workflow_id(self._state.alert_id, step),
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON))
            except WorkflowAlreadyStartedError:
                pass  # a resumed alert asked again: the first one is still delivering
            return
        try:
            await workflow.execute_activity(
                "notify", req, result_type=NotifyResult,
                start_to_close_timeout=timedelta(minutes=2), retry_policy=_NOTIFY_RETRY)
        except ActivityError as exc:
            # A notification that finally failed must not kill the alert: record it and go on.
            self._seq += 1
            await self._record("notify_failed", actor="system", details={
                "step": step, "error": str(exc.cause or exc)})

    # --- silences and maintenance windows --------------------------------------------------

    async def _check_hold(self) -> HoldDecision:
        s = self._state
        query = HoldQuery(org_id=s.org_id, compressor_id=s.compressor_id, site_id=s.site_id,
                          rule_id=s.rule_id, severity=s.severity, at=workflow.now())
        if not self._projection:
            return await workflow.execute_local_activity(
                CHECK_HOLD, query, result_type=HoldDecision,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=_DB_RETRY)
        try:
            return await workflow.execute_local_activity(
                CHECK_HOLD, query, result_type=HoldDecision,
                start_to_close_timeout=timedelta(seconds=10), retry_policy=_DB_BOUNDED)
        except FailureError as exc:
            if isinstance(exc, CancelledError):
                raise
            # Silences live in PostgreSQL: with it away, a notification goes out rather
            # than wait (an unwanted message beats a missed escalation).
            workflow.logger.warning("alert %s: silences cannot be read (%s); notifying",
                                    s.alert_id, exc.cause or exc)
            return HoldDecision()

    async def _held(self, step: str) -> bool:
        """Whether a silence or window holds this step back; if so it is recorded on the
        timeline (never sent later: the end of the hold sends one notification instead) and a
        durable timer re-checks at the hold's end."""
        now = workflow.now()
        decision = await self._check_hold()
        if decision.until is None or _utc(decision.until) <= now:
            return False
        self._notified.append(step)
        self._held_steps.append(step)
        self._held_until = _utc(decision.until)
        if self._held_since is None:
            self._held_since = now
        self._hold_recheck = now + HOLD_RECHECK
        self._seq += 1
        await self._record("notify_held", actor="system", details={
            "step": step, "held_by": decision.reason, "until": self._held_until.isoformat(),
            "silence_ids": decision.silence_ids, "window_ids": decision.window_ids,
            "detail": decision.detail})
        return True

    async def _hold_end(self) -> None:
        """The hold's end or a re-check: still held (extended, or a new silence), wait again;
        otherwise notify once, as if the alert had just opened, if it still needs someone."""
        decision = await self._check_hold()
        now = workflow.now()
        if decision.until is not None and _utc(decision.until) > now:
            self._held_until = _utc(decision.until)
            self._hold_recheck = now + HOLD_RECHECK
            return
        s = self._state
        held_since = self._held_since or now
        steps = self._held_steps
        self._held_until, self._held_since, self._held_steps = None, None, []
        self._released_at = now
        self._seq += 1
        await self._record("unsilenced", actor="system", details={
            "held_since": held_since.isoformat(), "held_steps": steps})
        if s.state == "resolved":
            return
        alert = s.model_copy(update={"held_since": held_since, "held_until": now})
        step = f"unsilenced-{self._seq}"
        if s.condition_state == "cleared":
            await self._notify(step, "all_notified", "cleared", alert)
        elif s.severity == "critical":
            await self._notify(step, "technicians_and_supervisors", "severity_raised", alert)
        else:
            await self._notify(step, "technicians", "opened", alert)

    def _upsert_search_attributes(self) -> None:
        if self._stale:
            return
        updates: list[SearchAttributeUpdate[Any]] = []
        for key, value in search_attribute_pairs(self._state):
            if key.name in SEARCH_ATTRIBUTES and self._sa_sent.get(key.name) != value:
                updates.append(key.value_set(value))
                self._sa_sent[key.name] = value
        if updates:
            workflow.upsert_search_attributes(updates)

    # --- continue-as-new --------------------------------------------------------------------

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        return (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= self._max_events)

    def _flush_idle(self) -> bool:
        """No flush under way or about to start: the outbox is empty, or its flush failed and
        waits for the retry timer (which a new run need not wait for)."""
        return not self._flushing and (not self._outbox or self._flush_waiting)

    def _outbox_outgrows_run(self) -> bool:
        return (self._projection and bool(self._outbox) and self._flush_idle()
                and self._continue_as_new_due())

    def _carry_input(self, inp: AlertInput) -> AlertInput:
        return AlertInput(
            breach=inp.breach, reminder_minutes=self._reminder_minutes,
            max_history_events=self._max_events,
            carried=AlertCarry(
                state=self._state, seq=self._seq, critical_since=self._critical_since,
                reminders_sent=self._reminders_sent, notified_steps=self._notified,
                request_ids=self._request_ids,
                pending_breaches=self._breaches + (
                    [self._next_alert] if self._next_alert is not None else []),
                pending_clears=self._clears, pending_acks=self._acks,
                held_until=self._held_until, held_since=self._held_since,
                held_steps=self._held_steps, released_at=self._released_at,
                outbox=self._outbox))
