"""``NotifyStepWorkflow``: one notification step of one alert, off the alert's own path.

The alert workflow starts one of these per step ("opened", "escalated", "reminder-2", ...) as
an abandoned child and goes straight back to its requests, so an acknowledgement or a clear is
applied at once however long a delivery takes. Here every (contact, channel) is its own
``deliver`` activity with its own retry policy; a contact none of whose channels worked is
replaced by the next level of the organization's escalation chain, and when the chain is
exhausted (or the step had nobody to reach at all) by the organization's fallback contact.
Every step that missed someone is recorded as a ``delivery_failed`` alert event.

Workflow id ``notify/{alert_id}/{step}``: one per alert and step, so a step started twice (a
resumed alert) finds the first one running.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from altaviz.core.payloads import (
        DeliveryFailure,
        DeliveryOutcome,
        DeliveryPlan,
        DeliveryTarget,
        NotifyRequest,
        NotifyStepResult,
        PlannedContact,
    )

WORKFLOW_NAME = "NotifyStepWorkflow"

#: One channel's retries: about two and a half minutes before its contact counts as unreached
#: and the next level of the chain is told.
DELIVERY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=2.0,
                             maximum_interval=timedelta(minutes=2), maximum_attempts=6,
                             non_retryable_error_types=["DeliveryRejected"])
_DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                        maximum_interval=timedelta(minutes=1),
                        non_retryable_error_types=["TerminalError", "TenantError"])


def notify_workflow_id(alert_id: str, step: str) -> str:
    """The id of the workflow delivering one step of one alert."""
    return f"notify/{alert_id}/{step}"


@workflow.defn(name=WORKFLOW_NAME)
class NotifyStepWorkflow:
    """Deliver one step to its audience, falling back along the chain (module docstring)."""

    def __init__(self) -> None:
        self._errors: dict[str, dict[str, str]] = {}

    @workflow.run
    async def run(self, req: NotifyRequest) -> NotifyStepResult:
        """Plan, deliver, fall back, and record what could not be delivered."""
        plan = await workflow.execute_activity(
            "plan_notification", req, result_type=DeliveryPlan,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=_DB_RETRY)
        attempted = {c.contact_id for c in plan.recipients}
        reached = await self._deliver_all(req, req.step, plan.recipients, "")
        unreached = [c for c in plan.recipients if c.contact_id not in reached]
        fallback: list[str] = []
        need_last_resort = not plan.recipients
        pending = sorted({c.role for c in unreached}, key=lambda r: _rank(plan, r))
        handled: set[str] = set()
        while pending:
            role = pending.pop(0)
            if role in handled:
                continue
            handled.add(role)
            level = _next_level(plan, role)
            if level is None:
                need_last_resort = True
                continue
            people = plan.levels[level]
            if any(p.contact_id in reached for p in people):
                continue  # someone at the next level already has this step
            fresh = [p for p in people if p.contact_id not in attempted]
            if fresh:
                attempted |= {p.contact_id for p in fresh}
                note = _note(unreached, reached)
                got = await self._deliver_all(req, f"{req.step}:fallback-{level}", fresh, note)
                reached |= got
                fallback += sorted(got)
            if not any(p.contact_id in reached for p in people):
                pending.append(level)
        last = plan.fallback_contact
        if need_last_resort and last is not None and last.contact_id not in reached:
            note = _note(unreached, reached) or "Nobody is on call for this alert's site."
            got = await self._deliver_all(req, f"{req.step}:fallback-org", [last], note)
            reached |= got
            fallback += sorted(got)
            attempted.add(last.contact_id)
        missed = sorted(attempted - reached)
        if missed or not plan.recipients:
            reason = ("nobody to notify: no active contact of the routed roles covers the site"
                      if not plan.recipients else "some recipients could not be reached")
            await workflow.execute_activity(
                "record_delivery_failure", DeliveryFailure(
                    alert=req.alert, step=req.step,
                    unreached={cid: self._errors.get(cid, {}) for cid in missed},
                    fallback=fallback, reason=reason, nobody_reached=not reached,
                    occurred_at=workflow.now()),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=_DB_RETRY)
        return NotifyStepResult(reached=sorted(reached), unreached=missed, fallback=fallback)

    async def _deliver_all(self, req: NotifyRequest, step: str, people: list[PlannedContact],
                           note: str) -> set[str]:
        """Deliver ``step`` to every channel of every person at once; the ids reached."""
        jobs = [(p.contact_id, ch) for p in people for ch in p.channels]
        results = await asyncio.gather(*(self._deliver(req, step, cid, ch, note)
                                         for cid, ch in jobs))
        return {cid for (cid, _), ok in zip(jobs, results, strict=True) if ok}

    async def _deliver(self, req: NotifyRequest, step: str, contact_id: str, channel: str,
                       note: str) -> bool:
        try:
            await workflow.execute_activity(
                "deliver", DeliveryTarget(alert=req.alert, step=step, event=req.event,
                                          contact_id=contact_id, channel=channel, note=note),
                result_type=DeliveryOutcome, start_to_close_timeout=timedelta(minutes=1),
                retry_policy=DELIVERY_RETRY)
        except ActivityError as exc:
            cause = exc.cause
            text = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            self._errors.setdefault(contact_id, {})[channel] = text[:300]
            return False
        return True


def _rank(plan: DeliveryPlan, role: str) -> int:
    return plan.chain.index(role) if role in plan.chain else -1


def _next_level(plan: DeliveryPlan, role: str) -> str | None:
    """The nearest role after ``role`` in the chain that has someone for the site."""
    start = plan.chain.index(role) + 1 if role in plan.chain else 0
    for level in plan.chain[start:]:
        if level != role and plan.levels.get(level):
            return level
    return None


def _note(unreached: list[PlannedContact], reached: set[str]) -> str:
    names = [c.contact_id for c in unreached if c.contact_id not in reached]
    if not names:
        return ""
    return f"You receive this because {', '.join(names)} could not be reached."
