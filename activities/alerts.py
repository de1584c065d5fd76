"""Persistence activities of the alert workflows: ``alert_history`` and ``alert_events``.

Every write is idempotent, because Temporal retries activities and a worker may crash after
the database committed but before the result reached the server:

- ``alert_events`` rows are keyed ``{alert_id}:{seq}:{event_type}`` (``ON CONFLICT DO
  NOTHING``), so a retried transition is recorded once;
- ``alert_history`` is upserted only forward (``WHERE seq < EXCLUDED.seq``), so a late retry
  of an older transition never overwrites a newer state.

The activities are synchronous (psycopg, one pooled connection per call) and run in the
worker's thread pool; each write is one tenant transaction (row-level security applies).

``record_transitions`` is the flush of an alert workflow's outbox: a batch of transitions in
order, in one transaction, waiting at most ``connect_wait`` seconds for a connection, so that
with PostgreSQL away it fails within seconds and the workflow retries on its own durable timer.
A transition that can never be written (a constraint refuses it) is logged and skipped, inside
its own savepoint: the alert goes on either way, since PostgreSQL is its projection, not its
gate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from altaviz.core.db import queries, tenant
from altaviz.core.errors import TerminalError
from altaviz.core.payloads import AlertState, AlertTransition, DeliveryFailure, OpenAlertResult

#: Activity names (the workflow refers to them by these strings).
OPEN_ALERT = "open_alert"
RECORD_TRANSITION = "record_transition"
RECORD_TRANSITIONS = "record_transitions"
#: Seconds the bounded activities wait for a pooled connection (PostgreSQL away: fail fast).
CONNECT_WAIT = 5.0
RECORD_DELIVERY_FAILURE = "record_delivery_failure"


def event_key(alert_id: str, seq: int, event_type: str) -> str:
    """The idempotency key of one transition's event."""
    return f"{alert_id}:{seq}:{event_type}"


def state_params(state: AlertState, seq: int, run_id: str | None) -> dict[str, Any]:
    """Parameters of the ``upsert_alert`` query for one state."""
    params = state.model_dump(exclude={"last_breach_hour"})
    params["last_breach_hour"] = state.last_breach_hour or state.breach_hour
    params["seq"] = seq
    params["run_id"] = run_id
    return params


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class AlertActivities:
    """Persistence of alert transitions. Dependencies come in through ``__init__``."""

    def __init__(self, pool: ConnectionPool[Any], *, connect_wait: float = CONNECT_WAIT) -> None:
        self._pool = pool
        self._connect_wait = connect_wait
        self._q = queries("alerts")

    @activity.defn(name=OPEN_ALERT)
    def open_alert(self, transition: AlertTransition) -> OpenAlertResult:
        """Record a new alert, unless its breach is already covered by an earlier alert.

        Returns ``stale`` when the latest alert of the same workflow id already covered this
        breach hour (an hour re-evaluated after that alert was resolved): the workflow then
        ends quietly, nothing is written and nobody is notified. Returns ``resumed`` with the
        stored state when this very alert already exists and is not resolved (a run that was
        terminated and started again), so numbering continues after its last transition;
        ``opened`` again when the stored row is this run's own opening (a retried attempt
        whose first try committed but never reported back).
        """
        state = transition.state
        try:
            with self._pool.connection() as conn, tenant(conn, state.org_id):
                row = conn.execute(self._q["latest_alert_for_workflow"],
                                   {"workflow_id": state.workflow_id}).fetchone()
                if row is not None:
                    alert_id, latest_state, last_hour, seq = row
                    if alert_id == state.alert_id:
                        if latest_state == "resolved":
                            return OpenAlertResult(
                                status="stale", reason=f"alert {alert_id} is already resolved")
                        stored, stored_run = self._load(conn, alert_id)
                        if int(seq) == 0 and transition.seq == 1:
                            # A row the reconciler wrote for this run before it opened.
                            self._write(conn, transition)
                            return OpenAlertResult(status="opened", seq=transition.seq,
                                                   state=state)
                        if (transition.run_id is not None and stored_run == transition.run_id
                                and int(seq) == transition.seq):
                            # This run's own earlier attempt committed the opening but never
                            # reported back (timed out on a database that was away): the
                            # alert is opened, not resumed, so it is still announced.
                            return OpenAlertResult(status="opened", seq=transition.seq,
                                                   state=state)
                        return OpenAlertResult(status="resumed", seq=int(seq), state=stored)
                    covered = _utc(last_hour)
                    if covered is not None and covered >= state.breach_hour:
                        return OpenAlertResult(
                            status="stale",
                            reason=f"breach hour {state.breach_hour.isoformat()} already "
                                   f"covered by alert {alert_id} ({latest_state})")
                self._write(conn, transition)
        except psycopg.errors.ForeignKeyViolation as exc:
            # The compressor does not exist for this organization: retrying cannot help.
            raise ApplicationError(
                f"alert {state.alert_id}: compressor {state.compressor_id} is not part of "
                f"organization {state.org_id}", type="TerminalError", non_retryable=True,
            ) from exc
        return OpenAlertResult(status="opened", seq=transition.seq, state=state)

    @activity.defn(name=RECORD_TRANSITION)
    def record_transition(self, transition: AlertTransition) -> None:
        """Upsert the current state and append the transition's event (both idempotent)."""
        try:
            with self._pool.connection() as conn, tenant(conn, transition.state.org_id):
                self._write(conn, transition)
        except (psycopg.errors.ForeignKeyViolation, psycopg.errors.CheckViolation) as exc:
            raise ApplicationError(f"alert {transition.state.alert_id}: {exc}",
                                   type="TerminalError", non_retryable=True) from exc
        except TerminalError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__,
                                   non_retryable=True) from exc
        _log_transition(transition)

    @activity.defn(name=RECORD_TRANSITIONS)
    def record_transitions(self, batch: list[AlertTransition]) -> int:
        """Write a workflow's outbox batch in order, in one transaction; returns how many
        transitions were written (the others were refused for good and logged)."""
        if not batch:
            return 0
        written = 0
        with (self._pool.connection(timeout=self._connect_wait) as conn,
              tenant(conn, batch[0].state.org_id)):
            for t in batch:
                try:
                    with conn.transaction():  # a savepoint: a refused row leaves the rest
                        self._write(conn, t)
                    written += 1
                except (psycopg.errors.ForeignKeyViolation,
                        psycopg.errors.CheckViolation) as exc:
                    activity.logger.error("alert %s: transition %d (%s) refused, skipped: %s",
                                          t.state.alert_id, t.seq, t.event_type, exc)
        for t in batch:
            _log_transition(t)
        return written

    @activity.defn(name=RECORD_DELIVERY_FAILURE)
    def record_delivery_failure(self, failure: DeliveryFailure) -> None:
        """Record that a notification step missed someone, as a ``delivery_failed`` event.

        Keyed ``{alert_id}:delivery:{step}``: one event per step however often it is retried.
        The alert's own transition numbering (``seq``) is not touched, because the step runs
        beside the alert workflow, not in it.
        """
        alert = failure.alert
        details: dict[str, Any] = {"step": failure.step, "reason": failure.reason,
                                   "unreached": failure.unreached,
                                   "fallback": failure.fallback,
                                   "nobody_reached": failure.nobody_reached}
        with self._pool.connection() as conn, tenant(conn, alert.org_id):
            conn.execute(self._q["insert_alert_event"], {
                "event_key": f"{alert.alert_id}:delivery:{failure.step}",
                "alert_id": alert.alert_id, "org_id": alert.org_id,
                "event_type": "delivery_failed",
                "occurred_at": failure.occurred_at or datetime.now(UTC), "actor": "system",
                "details": Jsonb(details)})
        activity.logger.warning(
            "alert %s step %s: %s (unreached: %s; told instead: %s)", alert.alert_id,
            failure.step, failure.reason, ", ".join(failure.unreached) or "-",
            ", ".join(failure.fallback) or "nobody")

    def _write(self, conn: psycopg.Connection[Any], t: AlertTransition) -> None:
        conn.execute(self._q["upsert_alert"], state_params(t.state, t.seq, t.run_id))
        if t.run_id is not None:
            conn.execute(self._q["add_run_id"], {"alert_id": t.state.alert_id,
                                                 "run_id": t.run_id})
        conn.execute(self._q["insert_alert_event"], {
            "event_key": event_key(t.state.alert_id, t.seq, t.event_type),
            "alert_id": t.state.alert_id,
            "org_id": t.state.org_id,
            "event_type": t.event_type,
            "occurred_at": t.occurred_at,
            "actor": t.actor,
            "details": Jsonb({"seq": t.seq, "state": t.state.state,
                              "severity": t.state.severity, **t.details}),
        })

    def close_orphan(self, org_id: str, alert_id: str, reason: str) -> bool:
        """Resolve an open alert whose workflow no longer runs (the reconciler's repair), with
        a ``reconciled`` event giving ``reason``; False if it was closed meanwhile."""
        now = datetime.now(UTC)
        with self._pool.connection() as conn, tenant(conn, org_id):
            row = conn.execute(self._q["lock_alert"], {"alert_id": alert_id}).fetchone()
            if row is None or row[1] == "resolved":
                return False
            seq = int(row[0])
            state, run_id = self._load(conn, alert_id)
            state = state.model_copy(update={
                "state": "resolved", "resolved_at": now, "resolved_by": "reconciler",
                "resolve_reason": reason})
            self._write(conn, AlertTransition(
                state=state, seq=seq + 1, event_type="reconciled", occurred_at=now,
                actor="reconciler", details={"repair": "closed", "reason": reason},
                run_id=run_id))
        return True

    def reattach(self, state: AlertState, run_id: str) -> bool:
        """Write the row of a running alert that PostgreSQL does not know (seq 0, so every
        transition of the workflow overwrites it), with a ``reconciled`` event; False if a
        row exists."""
        now = datetime.now(UTC)
        with self._pool.connection() as conn, tenant(conn, state.org_id):
            if conn.execute(self._q["alert_exists"], {"alert_id": state.alert_id}).fetchone():
                return False
            self._write(conn, AlertTransition(
                state=state, seq=0, event_type="reconciled", occurred_at=now,
                actor="reconciler", details={
                    "repair": "reattached",
                    "reason": "the workflow was running but PostgreSQL had no row for it"},
                run_id=run_id))
        return True

    def _load(self, conn: psycopg.Connection[Any], alert_id: str
              ) -> tuple[AlertState, str | None]:
        """The stored state of an alert and the workflow run that last wrote it."""
        cur = conn.execute(self._q["alert_by_id"], {"alert_id": alert_id})
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        data = dict(zip([c.name for c in cur.description], row, strict=True))
        data["site_id"] = data.get("site_id") or ""
        data["escalation_delay_hours"] = data.get("escalation_delay_hours") or 4.0
        data["diagnosis"] = data.get("diagnosis") or ""
        return AlertState.model_validate(data), data.get("run_id")


def _log_transition(t: AlertTransition) -> None:
    """One log line for the transitions an operator follows (who acknowledged, resolved or
    escalated what), the same for single and batched writes."""
    if t.event_type in ("acknowledged", "resolved", "escalated"):
        s = t.state
        activity.logger.info("alert %s %s by %s%s", s.alert_id, t.event_type,
                             t.actor or "system",
                             f" via {s.ack_channel}" if t.event_type == "acknowledged"
                             and s.ack_channel else "")
