"""An alert's story in the words of the people who handle it.

PostgreSQL keeps what happened to an alert in three places: ``alert_events`` (opened,
escalated, acknowledged, cleared, resolved ...), ``notifications`` (one row per delivery
attempt, per contact and channel) and ``link_tokens_used``. This module merges them into one
list of :class:`Entry`, oldest first, each a sentence a supervisor reads without knowing the
workflow engine: "Notified Jo Rivera (technician) by email: delivered". The workflow's own
events (tasks, timers) are not part of it; the alert page links to them in the Temporal Web UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from altaviz.app.web.chart import fmt_value
from altaviz.core.messages import metric_label, metric_unit


@dataclass(frozen=True)
class Entry:
    """One line of the timeline.

    Attributes:
        kind: what happened, one word for styling and tests (``opened``, ``notified``,
            ``failed``, ``escalated``, ``acknowledged``, ``cleared``, ``resolved`` ...).
        text: the sentence shown.
        detail: a secondary line (a delivery error, a comment), possibly empty.
    """

    at: datetime
    kind: str
    text: str
    detail: str = ""


def duration(hours: float) -> str:
    """``45 min``, ``4 h``, ``2 h 30 min``, ``3 days``: never fractions of an hour."""
    minutes = round(hours * 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        h, m = divmod(minutes, 60)
        return f"{h} h" + (f" {m} min" if m else "")
    days = minutes / (24 * 60)
    return f"{days:.0f} days" if abs(days - round(days)) < 0.05 else f"{days:.1f} days"


def observed(alert: dict[str, Any], value: Any = None, limit: Any = None) -> tuple[str, str]:
    """The alert's value and limit as people read them: hours without data for a no-data
    rule (``no data for 5 h``, ``3 h``), else the metric's value with its unit."""
    value = alert.get("value") if value is None else value
    limit = alert.get("threshold") if limit is None else limit
    if alert.get("rule_kind") in ("no_data", "offline"):
        def hours(v: Any) -> str:
            return duration(float(v)) if isinstance(v, int | float) and v == v else "?"
        return f"no data for {hours(value)}", hours(limit)
    return with_unit(value, alert["metric"]), with_unit(limit, alert["metric"])


def with_unit(value: float | None, metric: str) -> str:
    """A value rounded for reading, with the metric's unit (``12.6 mm/s``)."""
    if value is None or value != value:
        return "no data"
    unit = metric_unit(metric)
    return f"{fmt_value(float(value))} {unit}".strip()


_CHANNELS = {"json": "webhook", "jsons": "webhook", "form": "webhook", "forms": "webhook",
             "mailto": "email", "mailtos": "email", "link": "link", "cli": "command line",
             "console": "console"}


def channel_name(scheme: str | None) -> str:
    """A delivery channel as people say it (``email``, ``webhook``, ``slack``)."""
    if not scheme:
        return "unknown channel"
    return _CHANNELS.get(scheme, scheme)


def _about(step: str) -> str:
    """What a notification step was about, for "Notified X by email<about>"."""
    if step in ("", "opened"):
        return ""
    if step == "escalated":
        return " about the escalation"
    if step.startswith("reminder"):
        return f" with reminder {step.removeprefix('reminder').strip('-')}".rstrip()
    if step == "cleared":
        return " that the condition cleared"
    if step == "resolved":
        return " that the alert is resolved"
    return f" ({step})"


def build(alert: dict[str, Any], events: list[dict[str, Any]],
          notifications: list[dict[str, Any]], link_uses: list[dict[str, Any]],
          names: dict[str, str] | None = None) -> list[Entry]:
    """The alert's timeline, oldest first.

    Args:
        alert: the ``alert_history`` row (metric, value, threshold, severity).
        events, notifications, link_uses: the alert's rows (:mod:`~altaviz.app.web.console_store`).
        names: display names by contact id, to name who acknowledged or resolved.
    """
    who_is = dict(names or {})
    for n in notifications:
        if n.get("name"):
            who_is[n["contact_id"]] = n["name"]
    for u in link_uses:
        if u.get("name"):
            who_is[u["contact_id"]] = u["name"]

    def who(actor: str | None) -> str:
        if not actor:
            return "someone"
        return who_is.get(actor, actor)

    metric = alert["metric"]
    label = metric_label(metric)
    out: list[Entry] = []
    for e in events:
        d = e.get("details") if isinstance(e.get("details"), dict) else {}
        assert isinstance(d, dict)
        kind, at, actor = e["event_type"], e["occurred_at"], e.get("actor")
        if kind == "opened":
            value, limit = observed(alert, d.get("value"), d.get("threshold"))
            sev = d.get("severity", alert.get("severity"))
            if alert.get("rule_kind") in ("no_data", "offline"):
                out.append(Entry(at, "opened", f"Opened: {value} (the {sev} limit is "
                                               f"{limit})"))
            else:
                out.append(Entry(at, "opened", f"Opened: {label} {value} over the {sev} limit "
                                               f"{limit}"))
        elif kind == "escalated":
            after = d.get("after_hours")
            when = f" after {duration(float(after))}" if isinstance(after, int | float) else ""
            out.append(Entry(at, "escalated", f"Escalated to supervisors: not acknowledged"
                                              f"{when}"))
        elif kind == "reminder":
            out.append(Entry(at, "reminder", f"Reminder {d.get('reminder', '')} sent: still "
                                             "not acknowledged"))
        elif kind == "acknowledged":
            comment = d.get("comment") or ""
            out.append(Entry(at, "acknowledged", f"Acknowledged by {who(actor)} via "
                                                 f"{channel_name(d.get('channel'))}",
                             f"“{comment}”" if comment else ""))
        elif kind == "ack_rejected":
            out.append(Entry(at, "refused", f"Acknowledgement by {who(actor)} refused",
                             str(d.get("reason") or "")))
        elif kind == "cleared":
            out.append(Entry(at, "cleared", f"Cleared: {label} back within limits"))
        elif kind == "reactivated":
            out.append(Entry(at, "reopened", f"Breached again: {label} over the limit after "
                                             "clearing"))
        elif kind == "severity_raised":
            out.append(Entry(at, "escalated", f"Raised to critical: {label} "
                                              f"{with_unit(d.get('value'), metric)}"))
        elif kind == "breach_repeated":
            continue  # the same breach reported again: nothing new for a person
        elif kind == "resolved":
            reason = d.get("reason") or alert.get("resolve_reason") or ""
            out.append(Entry(at, "resolved", f"Resolved by {who(actor)}", str(reason)))
        elif kind in ("delivery_failed", "notify_failed"):
            reason = d.get("reason") or d.get("error") or ""
            out.append(Entry(at, "failed", "No one could be notified at step "
                                           f"{d.get('step', '?')}", str(reason)))
        elif kind == "reconciled":
            out.append(Entry(at, "resolved", "Closed by the reconciler",
                             str(d.get("reason") or "")))
        else:
            out.append(Entry(at, kind, kind.replace("_", " ").capitalize()))
    for n in notifications:
        person = f"{n.get('name') or n['contact_id']} ({n.get('role') or 'contact'})"
        about = _about(str(n.get("step") or ""))
        if n["status"] == "sent":
            out.append(Entry(n["attempted_at"], "notified",
                             f"Notified {person} by {channel_name(n['channel'])}{about}: "
                             "delivered"))
        else:
            out.append(Entry(n["attempted_at"], "failed",
                             f"Notifying {person} by {channel_name(n['channel'])}{about} "
                             f"failed (attempt {n.get('attempt', 1)})", str(n.get("error") or "")))
    for u in link_uses:
        if u["outcome"] == "queued":
            out.append(Entry(u["used_at"], "queued", f"{who(u['contact_id'])} tapped the "
                             "acknowledge link: queued until the alert service is back"))
        elif u["outcome"] == "released" and u.get("detail"):
            out.append(Entry(u["used_at"], "refused", f"{who(u['contact_id'])} tapped the "
                             "acknowledge link: not applied", str(u["detail"])))
    out.sort(key=lambda e: e.at)
    return out
