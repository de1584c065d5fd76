"""``altaviz alerts``: list, show, acknowledge and resolve alerts.

Lists and timelines come from PostgreSQL (``alert_history``, ``alert_events``,
``notifications``; each read in the organization's tenant transaction) plus the Temporal
history of the alert's workflow runs. Acknowledging goes to the alert workflow as the update
``acknowledge``; when no worker answers in time it falls back to the durable signal
``ack_requested`` (same request id, so it is applied once), which the server accepts without a
worker and which takes effect as soon as a worker runs again. ``ack`` and ``resolve`` do not
need PostgreSQL: the alert id names its workflow, and when the database cannot be reached the
workflow alone decides (it refuses another organization's request, or an alert it no longer
holds) and PostgreSQL catches up from it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from altaviz.app.commands.tables import print_table
from altaviz.app.context import App
from altaviz.core.db import org_ids, queries, tenant
from altaviz.core.errors import InputError, ServiceError
from altaviz.core.messages import duration, format_value, metric_label, number
from altaviz.core.payloads import AckRequest, AlertState, ResolveRequest
from workflows.alert import SIGNAL_ACK, UPDATE_ACK, UPDATE_RESOLVE, workflow_id_of

STATES = ("open", "acknowledged", "cleared_unacknowledged", "resolved", "all")
UPDATE_TIMEOUT = timedelta(seconds=10)
#: How much longer a resolution waits for a busy workflow before it reports failure.
BUSY_GRACE = timedelta(seconds=20)


def register(sub: Any) -> None:
    """Add ``alerts list|show|ack|resolve``."""
    parser = sub.add_parser("alerts", help="list, show, acknowledge or resolve alerts",
                            description="Alerts: one durable Temporal workflow each.")
    a_sub = parser.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    p = a_sub.add_parser("list", help="list alerts (default: every alert not yet resolved)")
    p.add_argument("--org", help="only this organization (default: every organization)")
    p.add_argument("--state", choices=STATES,
                   help="only alerts in this state ('all' includes resolved ones)")
    p.add_argument("--severity", choices=("warning", "critical"), help="only this severity")
    p.add_argument("--limit", type=int, default=200, help="at most this many per organization")
    p.set_defaults(handler=_list)

    p = a_sub.add_parser("show", help="an alert's full timeline: transitions, notifications, "
                                      "acknowledgements and its Temporal history")
    p.add_argument("alert_id", metavar="ID", help="the alert id (as printed by `alerts list`)")
    p.add_argument("--org", help="organization of the alert (default: read from the id)")
    p.add_argument("--no-temporal", action="store_true",
                   help="skip the Temporal workflow history (PostgreSQL only)")
    p.set_defaults(handler=_show)

    p = a_sub.add_parser("ack", help="acknowledge an alert (stops its escalation)")
    p.add_argument("alert_id", metavar="ID", help="the alert id")
    p.add_argument("--by", required=True, help="who acknowledges (name or contact id)")
    p.add_argument("--comment", help="optional note for the timeline")
    p.add_argument("--org", help="your organization (default: read from the id); an "
                                 "acknowledgement for another organization's alert is refused")
    p.set_defaults(handler=_ack)

    p = a_sub.add_parser("resolve", help="resolve an alert by hand, with a reason")
    p.add_argument("alert_id", metavar="ID", help="the alert id")
    p.add_argument("--by", required=True, help="who resolves it")
    p.add_argument("--reason", required=True, help="why (kept in the timeline)")
    p.add_argument("--org", help="your organization (default: read from the id)")
    p.set_defaults(handler=_resolve)


def org_of(alert_id: str, org: str | None) -> str:
    """The organization named by ``--org``, else the one in the alert id."""
    if org:
        return str(org)
    parts = alert_id.split("/")
    if len(parts) >= 5 and parts[0] == "alert":
        return parts[1]
    raise InputError(f"cannot tell the organization of {alert_id!r}: pass --org")


# --- list / show -------------------------------------------------------------------------------

def _list(args: argparse.Namespace, app: App) -> int:
    q = queries("cli")["alerts_table"]
    params = {"state": args.state, "severity": args.severity, "limit": args.limit}
    rows: list[tuple[Any, ...]] = []
    with app.connect() as conn:
        known = org_ids(conn)
        if args.org and args.org not in known:
            raise InputError(f"unknown organization {args.org!r}: `altaviz fleet` lists them")
        for org in [args.org] if args.org else known:
            with tenant(conn, org):
                rows += conn.execute(q, params).fetchall()
    if not rows:
        print("no alerts")
        return 0
    rows.sort(key=lambda r: (r[7], r[0]), reverse=True)
    table = []
    for (alert_id, _comp, metric, value, threshold, severity, state, breach_hour, acked_by,
         delivery_failures, kind) in rows:
        no_data = kind in SILENCE_KINDS or metric == "*"
        label = f"{metric_label(metric)} offline" if kind == "offline" else \
            "no data" if no_data else metric_label(metric)
        table.append((
            alert_id, severity, state, label,
            _value(value, metric, no_data), _limit(threshold, metric, no_data),
            _fmt(breach_hour, seconds=False),
            f"FAILED x{delivery_failures}" if delivery_failures else "ok", acked_by or ""))
    print_table(("alert", "severity", "state", "metric", "value", "limit", "breach (UTC)",
                 "delivery", "acknowledged by"), table, right=("value", "limit"))
    return 0


#: Rule kinds whose alert's value and limit are hours without data (a unit's, or one running
#: channel's), not readings.
SILENCE_KINDS = ("no_data", "offline")


def _value(value: float | None, metric: str, no_data: bool) -> str:
    """A reading with its unit; a no-data alert's value is hours without data."""
    if value is None:
        return "-"
    return duration(value) if no_data else format_value(value, metric)


def _limit(threshold: float | None, metric: str, no_data: bool) -> str:
    if threshold is None:
        return "-"
    return duration(threshold) if no_data else format_value(threshold, metric)


def _fmt(ts: datetime | None, *, seconds: bool = True) -> str:
    if ts is None:
        return "-"
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ" if seconds else "%Y-%m-%d %H:%M")


def alert_row(conn: Any, org: str, alert_id: str) -> dict[str, Any]:
    """The ``alert_history`` row as a dict, read as ``org``'s tenant."""
    with tenant(conn, org):
        cur = conn.execute(queries("alerts")["alert_by_id"], {"alert_id": alert_id})
        row = cur.fetchone()
    if row is None:
        raise InputError(f"no alert {alert_id} in organization {org}")
    return dict(zip([c.name for c in cur.description], row, strict=True))


def timeline(conn: Any, org: str, alert_id: str) -> list[tuple[datetime, str, str]]:
    """Every transition and notification attempt of the alert, in time order."""
    q = queries("alerts")
    items: list[tuple[datetime, str, str]] = []
    with tenant(conn, org):
        for occurred, event_type, actor, details, _key in conn.execute(
                q["alert_events_of"], {"alert_id": alert_id}):
            extra = {k: v for k, v in (details or {}).items() if k not in ("seq",)}
            items.append((occurred, f"event {event_type}",
                          f"by {actor or '-'} {_details(extra)}".rstrip()))
        for at, step, contact, channel, attempt, status, error in conn.execute(
                q["notifications_of"], {"alert_id": alert_id}):
            err = f" ({error})" if error else ""
            items.append((at, f"notify {step}",
                          f"{contact} via {channel}: {status}, attempt {attempt}{err}"))
    items.sort(key=lambda i: i[0])
    return items


async def temporal_history(client: Any, row: dict[str, Any]) -> list[tuple[datetime, str, str]]:
    """The interesting events of the alert's workflow runs (signals, updates, timers, ...)."""
    from temporalio.api.enums.v1 import EventType

    # The alert's own runs (recorded as they write), never the workflow id's latest run,
    # which may belong to a later alert.
    runs: list[str] = list(row.get("run_ids") or [])
    if not runs:
        try:
            async for wf in client.list_workflows(f'AltavizAlertId = "{row["alert_id"]}"'):
                runs.insert(0, wf.run_id)
        except Exception:
            runs = []
    if not runs and row.get("run_id"):
        runs = [row["run_id"]]
    items: list[tuple[datetime, str, str]] = []
    for run_id in runs:
        history = await client.get_workflow_handle(row["workflow_id"],
                                                   run_id=run_id).fetch_history()
        for e in history.events:
            name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
            what = _describe_event(e, name)
            if what is not None:
                items.append((e.event_time.ToDatetime(tzinfo=UTC), f"temporal {name.lower()}",
                              what))
    return items


def _describe_event(e: Any, name: str) -> str | None:
    if name == "WORKFLOW_EXECUTION_SIGNALED":
        return f"signal {e.workflow_execution_signaled_event_attributes.signal_name}"
    if name == "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
        return f"update {e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name}"  # noqa: E501
    if name == "ACTIVITY_TASK_SCHEDULED":
        return f"activity {e.activity_task_scheduled_event_attributes.activity_type.name}"
    if name == "START_CHILD_WORKFLOW_EXECUTION_INITIATED":
        a = e.start_child_workflow_execution_initiated_event_attributes
        return f"child {a.workflow_type.name} {a.workflow_id.rsplit('/', 1)[-1]}"
    if name in ("TIMER_STARTED", "TIMER_FIRED", "TIMER_CANCELED"):
        return ""
    if name.startswith("WORKFLOW_EXECUTION_") and name not in (
            "WORKFLOW_EXECUTION_UPDATE_COMPLETED",):
        return ""
    return None


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")


def _details(details: dict[str, Any]) -> str:
    """An event's details for people: rounded numbers, durations for ``*_hours``, times to
    the minute."""
    parts = []
    for key, value in details.items():
        if isinstance(value, float) and key.endswith("_hours"):
            shown = duration(value)
        elif isinstance(value, float):
            shown = number(value)
        elif isinstance(value, str):
            shown = _ISO.sub(lambda m: m.group(0).replace("T", " ")[:16], value)
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def readable(text: str) -> str:
    """A workflow's refusal as one line for people: no exception class name, no
    ``rejected:`` prefix, times to the minute in UTC."""
    text = re.sub(r"^(?:[A-Za-z_.]+(?:Error|Exception)): ", "", text.strip())
    text = text.removeprefix("rejected: ")
    return _ISO.sub(lambda m: m.group(0).replace("T", " ")[:16] + " UTC", text)


def _show(args: argparse.Namespace, app: App) -> int:
    org = org_of(args.alert_id, args.org)
    with app.connect() as conn:
        row = alert_row(conn, org, args.alert_id)
        items = timeline(conn, org, args.alert_id)
        with tenant(conn, org):
            failures = conn.execute(queries("alerts")["delivery_failures_of"],
                                    {"alert_id": args.alert_id}).fetchall()
            kind = conn.execute(queries("cli")["rule_kind_of_alert"],
                                {"alert_id": args.alert_id}).fetchone()
    print(f"alert {row['alert_id']}")
    print(f"  {row['org_id']} / {row['site_id'] or '-'} / {row['compressor_id']}  rule "
          f"{row['rule_id']} (rule set {row['rule_set_id'] or '-'}, version "
          f"{row['rule_version'] or '-'})")
    no_data = (kind is not None and kind[0] in SILENCE_KINDS) or row["metric"] == "*"
    what = f"{metric_label(row['metric'])} silent for" if kind is not None \
        and kind[0] == "offline" else "no data for" if no_data else metric_label(row["metric"])
    print(f"  {row['severity']}, {row['state']} (condition {row['condition_state']}, "
          f"{row['ack_state']}); {what} {_value(row['value'], row['metric'], no_data)} "
          f"(limit {_limit(row['threshold'], row['metric'], no_data)})")
    print(f"  opened {_fmt(row['opened_at'])}, breach hour {_fmt(row['breach_hour'])}, last "
          f"breach {_fmt(row['last_breach_hour'])}")
    if row["acknowledged_by"]:
        print(f"  acknowledged by {row['acknowledged_by']} via {row['ack_channel']} at "
              f"{_fmt(row['acknowledged_at'])}"
              + (f": {row['ack_comment']}" if row["ack_comment"] else ""))
    if row["resolved_at"]:
        print(f"  resolved by {row['resolved_by']} at {_fmt(row['resolved_at'])}: "
              f"{row['resolve_reason']}")
    for at, details in failures:
        unreached = ", ".join(details.get("unreached") or {}) or "-"
        told = ", ".join(details.get("fallback") or []) or "nobody"
        print(f"  DELIVERY FAILED {_fmt(at)} step {details.get('step')}: "
              f"{details.get('reason')}; unreached {unreached}; told instead {told}")
    if not args.no_temporal:
        try:
            items += asyncio.run(_with_client(app, lambda c: temporal_history(c, row)))
        except ServiceError as exc:
            print(f"  (Temporal history unavailable: {exc})")
        items.sort(key=lambda i: i[0])
    print("timeline:")
    for at, kind, what in items:
        print(f"  {_fmt(at)}  {kind:<42} {what}".rstrip())
    return 0


async def _with_client(app: App, fn: Any) -> Any:
    client = await app.temporal_client()
    return await fn(client)


# --- ack / resolve -----------------------------------------------------------------------------

async def acknowledge(client: Any, workflow_id: str, req: Any,
                      timeout: timedelta | None = None) -> tuple[str, Any]:
    """Acknowledge through the update, falling back to the signal when no worker answers.

    Returns:
        ``("acknowledged", state)``, ``("already", state)`` when another acknowledgement was
        applied first (``state`` says whose), or ``("queued", None)``.

    Raises:
        InputError: the workflow refused the acknowledgement (reason included).
    """
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    handle = client.get_workflow_handle(workflow_id)
    try:
        state = await asyncio.wait_for(
            handle.execute_update(UPDATE_ACK, req, id=req.request_id, result_type=AlertState),
            (timeout or UPDATE_TIMEOUT).total_seconds())
        if (state.acknowledged_by, state.ack_channel) != (req.by, req.channel):
            return "already", state
        return "acknowledged", state
    except WorkflowUpdateFailedError as exc:
        raise InputError(readable(str(exc.cause or exc))) from None
    except (TimeoutError, RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
        # a busy workflow (the server gave up waiting for the update) or no worker at all:
        # the durable signal, with the same request id, is applied once either way
        if isinstance(exc, RPCError) and "not found" in str(exc).lower():
            raise InputError(f"the workflow of {req.alert_id} is not running (the alert is "
                             f"resolved)") from None
        try:
            await handle.signal(SIGNAL_ACK, req)
        except RPCError as failed:
            raise ServiceError(f"cannot queue the acknowledgement of {req.alert_id}: "
                               f"{failed.message}") from None
        return "queued", None


def _row_unless_unreachable(app: App, org: str, alert_id: str) -> dict[str, Any]:
    """The alert's row, or (PostgreSQL unreachable) just its workflow id, read from the alert
    id: acknowledging and resolving then go to the workflow, which decides."""
    try:
        with app.connect() as conn:
            return alert_row(conn, org, alert_id)
    except (ServiceError, psycopg.OperationalError) as exc:
        print(f"altaviz: PostgreSQL is not reachable ({str(exc).splitlines()[0]}): asking "
              f"the alert's workflow directly", file=sys.stderr)
        return {"workflow_id": workflow_id_of(alert_id), "state": None, "ack_state": None}


def _ack(args: argparse.Namespace, app: App) -> int:
    org = org_of(args.alert_id, args.org)
    row = _row_unless_unreachable(app, org, args.alert_id)
    if row["state"] == "resolved":
        raise InputError(f"alert {args.alert_id} is already resolved")
    if row["ack_state"] == "acknowledged":
        at = _fmt(row["acknowledged_at"], seconds=False)
        raise InputError(f"alert {args.alert_id} is already acknowledged by "
                         f"{row['acknowledged_by']} at {at} UTC")
    req = AckRequest(org_id=org, by=args.by, channel="cli", comment=args.comment,
                     request_id=f"cli-{uuid.uuid4().hex}", requested_at=datetime.now(UTC),
                     alert_id=args.alert_id)
    outcome, state = asyncio.run(_with_client(
        app, lambda c: acknowledge(c, row["workflow_id"], req)))
    if outcome == "acknowledged":
        print(f"acknowledged {args.alert_id} by {args.by}: now {state.state}")
    elif outcome == "already":
        raise InputError(f"not acknowledged by {args.by}: {args.alert_id} was acknowledged by "
                         f"{state.acknowledged_by} via {state.ack_channel} at "
                         f"{_fmt(state.acknowledged_at, seconds=False)} UTC just before")
    else:
        print(f"no answer within {UPDATE_TIMEOUT.total_seconds():.0f} s (the alert's workflow "
              f"is busy, or no worker runs): the acknowledgement of {args.alert_id} was queued "
              f"and takes effect as soon as the workflow processes it")
    return 0


def _resolve(args: argparse.Namespace, app: App) -> int:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    org = org_of(args.alert_id, args.org)
    row = _row_unless_unreachable(app, org, args.alert_id)
    req = ResolveRequest(org_id=org, by=args.by, reason=args.reason,
                         request_id=f"cli-{uuid.uuid4().hex}", alert_id=args.alert_id)

    async def go(client: Any) -> AlertState:
        handle = client.get_workflow_handle(row["workflow_id"])
        try:
            result: AlertState = await asyncio.wait_for(
                handle.execute_update(UPDATE_RESOLVE, req, id=req.request_id,
                                      result_type=AlertState),
                UPDATE_TIMEOUT.total_seconds())
        except WorkflowUpdateFailedError as exc:
            raise InputError(readable(str(exc.cause or exc))) from None
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # Busy rather than gone? The update keeps its id: wait for its outcome a while
            # longer before calling it a failure.
            try:
                result = await asyncio.wait_for(
                    handle.get_update_handle(req.request_id, result_type=AlertState).result(),
                    BUSY_GRACE.total_seconds())
            except WorkflowUpdateFailedError as exc:
                raise InputError(readable(str(exc.cause or exc))) from None
            except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
                raise ServiceError(
                    f"the alert's workflow did not answer within "
                    f"{(UPDATE_TIMEOUT + BUSY_GRACE).total_seconds():.0f} s (no worker "
                    f"running, or busy): {args.alert_id} is not resolved yet; check "
                    f"`altaviz doctor` and try again") from None
        return result

    state = asyncio.run(_with_client(app, go))
    print(f"resolved {args.alert_id} by {args.by}: {state.state}")
    return 0
