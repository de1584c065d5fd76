"""``PipelineWorkflow``: the hourly pipeline run by a Temporal Schedule.

The ETL stages (bronze, silver, gold, aggregates, quality: one heartbeating activity each, on
the ETL workers' task queue, so a long backfill never holds up the alert workflows' workers),
then rule evaluation per organization, then breaches turned into started-or-updated alert
workflows in batches, then clears delivered to open alerts. Every
step is idempotent, so re-running an hour (a retried run, a manual re-run, the schedule's
catch-up) opens no duplicate alert and sends no duplicate notification: the alert workflow
ignores breach hours it has already seen and the dispatch skips hours already covered by a
resolved alert.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from altaviz.core.payloads import (
        BreachBatch,
        ClearBatch,
        DispatchResult,
        EtlEndRequest,
        EtlRequest,
        EtlStageName,
        EtlStageRequest,
        EtlStageResult,
        EtlSummary,
        EvaluateRequest,
        Evaluation,
        PipelineInput,
        PipelineResult,
    )
    from altaviz.core.settings import etl_queue_of

WORKFLOW_NAME = "PipelineWorkflow"
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=2.0,
                     maximum_interval=timedelta(minutes=2), maximum_attempts=10,
                     non_retryable_error_types=["TerminalError", "ConfigError", "RuleError",
                                                "InputError", "TenantError"])
_PARALLEL_BATCHES = 4

#: Pipeline runs from this patch on run the ETL as one activity per stage on the ETL task
#: queue; runs started before it (one ``run_etl`` activity on the workflow's own queue) replay
#: unchanged.
ETL_STAGES_PATCH = "etl-stage-activities"
ETL_STAGES: tuple[EtlStageName, ...] = ("bronze", "silver", "gold", "aggregates", "quality")
#: A stage of a long backfill may run for hours; a dead worker is found by the heartbeat
#: timeout long before this.
_STAGE_TIMEOUT = timedelta(hours=6)
_STAGE_HEARTBEAT = timedelta(minutes=5)


def hour_to_evaluate(scheduled: datetime) -> datetime:
    """The hour a run scheduled at ``scheduled`` evaluates: the last hour that has ended."""
    t = scheduled.astimezone(UTC)
    return t.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


@workflow.defn(name=WORKFLOW_NAME)
class PipelineWorkflow:
    """One hourly pipeline run (see the module docstring)."""

    @workflow.run
    async def run(self, inp: PipelineInput) -> PipelineResult:
        """Run the stages for one hour and return what each did."""
        hour = self._hour(inp)
        result = PipelineResult(hour=hour)
        hours = sorted({hour, *(h.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                                for h in inp.hours or [])})
        if inp.run_etl:
            if workflow.patched(ETL_STAGES_PATCH):
                etl = await self._etl_stages(hour, inp)
            else:
                etl = await workflow.execute_activity(
                    "run_etl", EtlRequest(hour=hour), result_type=EtlSummary,
                    start_to_close_timeout=timedelta(minutes=50),
                    heartbeat_timeout=timedelta(minutes=5), retry_policy=_RETRY)
            result.etl = etl
            hours = sorted({*hours, *etl.changed_hours})
        orgs = inp.org_ids
        if orgs is None:
            orgs = await workflow.execute_activity(
                "list_organizations", result_type=list[str],
                start_to_close_timeout=timedelta(minutes=1), retry_policy=_RETRY)
        result.organizations = len(orgs)
        for org in orgs:
            evaluation = await workflow.execute_activity(
                "evaluate_rules", EvaluateRequest(org_id=org, hours=hours),
                result_type=Evaluation, start_to_close_timeout=timedelta(minutes=20),
                heartbeat_timeout=timedelta(minutes=5), retry_policy=_RETRY)
            result.breaches += len(evaluation.breaches)
            result.clears += len(evaluation.clears)
            # Breaches before clears: a clear is only meaningful for an alert already open.
            for sent in await self._dispatch_breaches(evaluation, inp):
                result.alerts_signalled += sent.sent
                result.breaches_skipped += sent.skipped
            for sent in await self._dispatch_clears(evaluation, inp):
                result.clears_signalled += sent.sent
        # One line per run for the operator's log (not written while a history replays).
        took = (workflow.now() - workflow.info().start_time).total_seconds()
        workflow.logger.info(
            "pipeline run for hour %s: %s; %d organizations, %d breaches (%d alerts opened or "
            "updated, %d already covered), %d clears signalled, %.1f s",
            f"{hour:%Y-%m-%d %H:00}Z", result.etl.detail if result.etl else "no ETL",
            result.organizations, result.breaches, result.alerts_signalled,
            result.breaches_skipped, result.clears_signalled, took)
        return result

    async def _etl_stages(self, hour: datetime, inp: PipelineInput) -> EtlSummary:
        """One activity per ETL stage on the ETL queue, between ``etl_begin`` and ``etl_end``
        (which record the run and return the hours to evaluate); a failed stage is recorded
        as the run's failure and fails the workflow."""
        queue = inp.etl_task_queue or etl_queue_of(workflow.info().task_queue)
        run_id = workflow.now().strftime("%Y%m%dT%H%M%SZ-") + workflow.uuid4().hex[:8]
        req = EtlStageRequest(run_id=run_id)
        await workflow.execute_activity(
            "etl_begin", req, task_queue=queue, start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_RETRY)
        stages: list[EtlStageResult] = []
        for stage in ETL_STAGES:
            try:
                stages.append(await workflow.execute_activity(
                    f"etl_{stage}", req, result_type=EtlStageResult, task_queue=queue,
                    start_to_close_timeout=_STAGE_TIMEOUT, heartbeat_timeout=_STAGE_HEARTBEAT,
                    retry_policy=_RETRY))
            except ActivityError as exc:
                await self._etl_end(EtlEndRequest(run_id=run_id, hour=hour, stages=stages,
                                                   error=f"{stage}: {exc.cause or exc}"), queue)
                raise
        return await self._etl_end(EtlEndRequest(run_id=run_id, hour=hour, stages=stages), queue)

    async def _etl_end(self, end: EtlEndRequest, queue: str) -> EtlSummary:
        return await workflow.execute_activity(
            "etl_end", end, result_type=EtlSummary, task_queue=queue,
            start_to_close_timeout=timedelta(minutes=2), retry_policy=_RETRY)

    def _hour(self, inp: PipelineInput) -> datetime:
        if inp.hour is not None:
            return inp.hour.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
        return hour_to_evaluate(scheduled or workflow.now())

    async def _dispatch_breaches(self, ev: Evaluation,
                                 inp: PipelineInput) -> list[DispatchResult]:
        size = inp.batch_size
        batches = [BreachBatch(breaches=ev.breaches[i:i + size],
                               reminder_minutes=inp.reminder_minutes)
                   for i in range(0, len(ev.breaches), size)]
        return await self._run_batches("start_or_update_alerts", batches)

    async def _dispatch_clears(self, ev: Evaluation, inp: PipelineInput) -> list[DispatchResult]:
        size = inp.batch_size
        batches = [ClearBatch(clears=ev.clears[i:i + size])
                   for i in range(0, len(ev.clears), size)]
        return await self._run_batches("signal_clears", batches)

    async def _run_batches(self, activity: str,
                           batches: list[BreachBatch] | list[ClearBatch]) -> list[DispatchResult]:
        results: list[DispatchResult] = []
        for i in range(0, len(batches), _PARALLEL_BATCHES):
            group = batches[i:i + _PARALLEL_BATCHES]
            handles = [workflow.start_activity(
                activity, b, result_type=DispatchResult,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(minutes=1), retry_policy=_RETRY) for b in group]
            for h in handles:
                results.append(await h)
        return results
