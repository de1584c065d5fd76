"""``ReconcileWorkflow``: one pass of the alert reconciler, run by a Temporal Schedule.

PostgreSQL's ``alert_history`` is a projection of the alert workflows. A workflow terminated by
an operator, a run that failed, or a dev server that lost its state leaves a row open that no
workflow will ever close (and a second alert would open beside it); a database restored from
an older backup misses rows of alerts that are still running. The ``reconcile_alerts``
activity compares both sides and repairs each, recording a ``reconciled`` event that says what
it did; this workflow only runs it on the schedule.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from altaviz.core.payloads import ReconcileResult

WORKFLOW_NAME = "ReconcileWorkflow"


@workflow.defn(name=WORKFLOW_NAME)
class ReconcileWorkflow:
    """Run one reconciliation (see the module docstring)."""

    @workflow.run
    async def run(self) -> ReconcileResult:
        """Compare open alerts with running workflows and repair both directions."""
        return await workflow.execute_activity(
            "reconcile_alerts", result_type=ReconcileResult,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5),
                                     maximum_interval=timedelta(minutes=1),
                                     maximum_attempts=5))
