"""One-time Temporal set-up, safe to repeat at every start: search attributes and the schedule.

The embedded dev server gets the search attributes on its command line
(``--search-attribute``); an external server gets them here through the operator service.
Both functions are idempotent, so every worker can call them at start-up.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from altaviz.core.errors import ServiceError
from altaviz.core.payloads import PipelineInput
from workflows import PIPELINE_SCHEDULE_ID, RECONCILE_SCHEDULE_ID, SEARCH_ATTRIBUTES
from workflows.pipeline import PipelineWorkflow
from workflows.reconcile import ReconcileWorkflow

log = logging.getLogger(__name__)

_KINDS = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
          "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
          "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
          "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME}


async def ensure_search_attributes(client: Client, namespace: str | None = None) -> list[str]:
    """Register Altaviz's search attributes that the server does not know yet.

    Returns:
        The names that were added (empty when all existed).

    Raises:
        ServiceError: the server refused (e.g. a cloud namespace without operator access):
            register them by hand with ``temporal operator search-attribute create``.
    """
    ns = namespace or client.namespace
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=ns))
        known = set(existing.custom_attributes) | set(existing.system_attributes)
        missing = {name: _KINDS[kind] for name, kind in SEARCH_ATTRIBUTES.items()
                   if name not in known}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=ns, search_attributes=missing))
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return []
        names = " ".join(f"--name {n} --type {k}" for n, k in SEARCH_ATTRIBUTES.items())
        raise ServiceError(
            f"cannot register search attributes on namespace {ns}: {exc.message}; register "
            f"them with `temporal operator search-attribute create {names}`") from exc
    return sorted(missing)


async def ensure_schedule(client: Client, *, task_queue: str, reminder_minutes: int = 60,
                          etl_task_queue: str | None = None,
                          schedule_id: str = PIPELINE_SCHEDULE_ID,
                          offset: timedelta = timedelta(minutes=5)) -> bool:
    """Create the hourly pipeline schedule, or bring an existing one's action up to date.

    The run at HH:05 evaluates hour HH-1 (it reads ``TemporalScheduledStartTime``); a run still
    going when the next is due delays the next one (buffer one) rather than overlapping it.
    An existing schedule keeps its state (paused or not) and gets the current action, so a
    changed ETL task queue or reminder interval reaches the next run.

    Returns:
        True when it was created, False when it already existed.
    """
    action = ScheduleActionStartWorkflow(
        PipelineWorkflow.run,
        PipelineInput(reminder_minutes=reminder_minutes, etl_task_queue=etl_task_queue),
        id=f"pipeline/{schedule_id}", task_queue=task_queue,
        execution_timeout=timedelta(hours=2))
    try:
        await client.create_schedule(
            schedule_id,
            Schedule(
                action=action,
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1),
                                                                  offset=offset)]),
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE,
                                      catchup_window=timedelta(hours=6)),
            ),
        )
    except ScheduleAlreadyRunningError:
        def updated(current: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=dataclasses.replace(
                current.description.schedule, action=action))

        await client.get_schedule_handle(schedule_id).update(updated)
        return False
    log.info("created schedule %s", schedule_id)
    return True


#: How often the reconciler compares open alerts with running alert workflows.
RECONCILE_EVERY = timedelta(minutes=10)


async def ensure_reconcile_schedule(client: Client, *, task_queue: str,
                                    schedule_id: str = RECONCILE_SCHEDULE_ID,
                                    every: timedelta = RECONCILE_EVERY) -> bool:
    """Create the reconciler's schedule, or bring an existing one's action and interval up to
    date (keeping it paused if an operator paused it).

    Returns:
        True when it was created, False when it already existed.
    """
    action = ScheduleActionStartWorkflow(
        ReconcileWorkflow.run, id=f"reconcile/{schedule_id}", task_queue=task_queue,
        execution_timeout=timedelta(minutes=30))
    spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)])
    try:
        await client.create_schedule(
            schedule_id,
            Schedule(action=action, spec=spec,
                     policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)))
    except ScheduleAlreadyRunningError:
        def updated(current: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=dataclasses.replace(
                current.description.schedule, action=action, spec=spec))

        await client.get_schedule_handle(schedule_id).update(updated)
        return False
    log.info("created schedule %s", schedule_id)
    return True
