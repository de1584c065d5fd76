"""The alert reconciler's activity: open rows in PostgreSQL against running alert workflows.

Both directions are repaired, each with a ``reconciled`` alert event saying what was done:

- an open row whose workflow is gone (terminated, failed, timed out, completed without
  closing it, unknown to the server) or now holds another alert is resolved by
  ``reconciler``, so the next breach opens a clean alert instead of one beside a zombie;
- a running alert workflow without a row gets one written from its current state (seq 0,
  which its next transition overwrites).
"""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.alerts import AlertActivities
from altaviz.core.db import org_ids, queries, tenant
from altaviz.core.payloads import AlertState, ReconcileResult
from workflows.alert import QUERY_STATE, SA_ALERT_ID, WORKFLOW_NAME


class ReconcileActivities:
    """The reconciler's activity; dependencies come in through ``__init__``."""

    def __init__(self, *, client: Client, pool: ConnectionPool[Any]) -> None:
        self._client = client
        self._pool = pool
        self._alerts = AlertActivities(pool)
        self._q = queries("alerts")

    @activity.defn(name="reconcile_alerts")
    async def reconcile_alerts(self) -> ReconcileResult:
        """Close open rows without a workflow; write rows for workflows without one."""
        rows = await asyncio.to_thread(self._open_rows)
        result = ReconcileResult(checked=len(rows))
        for org_id, alert_id, workflow_id in rows:
            activity.heartbeat(alert_id)
            reason = await self._gone(workflow_id, alert_id)
            if reason is not None and await asyncio.to_thread(
                    self._alerts.close_orphan, org_id, alert_id, reason):
                activity.logger.warning("reconciler closed alert %s: %s", alert_id, reason)
                result.closed.append(alert_id)
        result.reattached = await self._reattach({r[1] for r in rows})
        return result

    def _open_rows(self) -> list[tuple[str, str, str]]:
        found: list[tuple[str, str, str]] = []
        with self._pool.connection() as conn:
            for org in org_ids(conn):
                with tenant(conn, org):
                    found += [(org, r[0], r[1])
                              for r in conn.execute(self._q["open_alerts"]).fetchall()]
        return found

    async def _gone(self, workflow_id: str, alert_id: str) -> str | None:
        """Why no workflow will ever close this alert, or None when one runs for it."""
        try:
            desc = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return f"its workflow {workflow_id} is unknown to the Temporal server"
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            status = desc.status.name.lower() if desc.status else "closed"
            return f"its workflow {workflow_id} is {status} (run {desc.run_id})"
        holds = desc.typed_search_attributes.get(SA_ALERT_ID)
        if holds is not None and holds != alert_id:
            return f"its workflow {workflow_id} now holds alert {holds}"
        return None

    async def _reattach(self, known: set[str]) -> list[str]:
        done: list[str] = []
        query = f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Running'"
        try:
            async for wf in self._client.list_workflows(query):
                alert_id = wf.typed_search_attributes.get(SA_ALERT_ID)
                if alert_id is None or alert_id in known:
                    continue
                activity.heartbeat(alert_id)
                handle = self._client.get_workflow_handle(wf.id, run_id=wf.run_id)
                try:
                    state = await handle.query(QUERY_STATE, result_type=AlertState)
                except RPCError:
                    continue   # no worker answered, or it just ended: the next pass sees it
                if state.state == "resolved" or state.alert_id != alert_id:
                    continue
                if await asyncio.to_thread(self._alerts.reattach, state, wf.run_id):
                    activity.logger.warning("reconciler re-attached alert %s", alert_id)
                    done.append(alert_id)
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.INVALID_ARGUMENT):
                raise
            activity.logger.warning("reconciler: this Temporal server cannot list workflows "
                                    "(%s); only open rows were checked", exc.message)
        return done
