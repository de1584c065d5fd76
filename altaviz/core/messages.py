"""Notification messages written for a technician in a truck between sites.

Every message leads with what and where (``COMP-0003 vibration critical - bearing wear
suspected``), then the number against its limit and why the limit exists, whether it is getting
worse, what to check, and the one link to tap. Two forms: a short one that fits an SMS, and a
full one for email, chat and webhooks. Rendering is pure (no I/O); :func:`load_context` reads
what it needs from PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from altaviz.core.db import queries
from altaviz.core.forecast_text import ForecastNote, forecast_line, load_forecast
from altaviz.core.payloads import AlertState
from altaviz.core.telemetry import METRIC_BY_NAME

TREND_HOURS = 6
SMS_LIMIT = 320  # two concatenated SMS segments; the link alone takes about 200 of them

#: Apprise schemes that end up as an SMS or a pager line: they get the short form.
SHORT_FORM_SCHEMES = frozenset({
    "sns", "twilio", "sinch", "nexmo", "vonage", "clickatell", "msg91", "bulksms", "bulkvs",
    "d7sms", "kavenegar", "messagebird", "plivo", "smseagle", "smsmgr", "signal", "signals",
    "threema", "freemobile", "seven", "burstsms", "httpsms", "voipms", "africastalking",
    "46elks", "brevo", "esendex", "smpp", "smpps", "textbelt", "tgram",
})

# Short names technicians use, for the metrics whose full description is too long for a title.
_SHORT_NAMES = {
    "vibration_frame_mm_s": "vibration",
    "vibration_cylinder_mm_s": "cylinder vibration",
    "vibration_skid_mm_s": "skid vibration",
    "bearing_temp_max_f": "main-bearing temp",
    "bearing_temp_min_f": "main-bearing temp (coolest)",
    "bearing_spread_f": "main-bearing spread",
    "oil_pressure_psig": "oil pressure",
    "oil_temp_f": "oil temp",
    "oil_filter_dp_psid": "oil filter dP",
    "discharge_temp_max_f": "discharge temp",
    "avg_suction_discharge_temp_f": "avg suction/discharge temp",
    "jacket_water_temp_f": "jacket water temp",
    "flow_mmscfd": "flow",
    "speed_rpm": "speed",
    "suction_temp_f": "suction temp",
}

# Checks by metric family, from docs/DOMAIN.md, used when the rule names none of its own.
_DEFAULT_CHECKS: list[tuple[str, str]] = [
    ("bearing", "Pull an oil sample; check bearing clearances and oil pressure."),
    ("vibration", "Check mounting bolts, foundation and alignment; look for loose components; "
                  "compare with bearing temperatures."),
    ("oil_filter", "Change the oil filter; check the oil and the oil cooler."),
    ("oil_pressure", "Check oil level, filter dP and the oil pump; stop the unit if pressure "
                     "keeps falling."),
    ("oil_temp", "Check the oil cooler, its fan and the oil itself."),
    ("discharge_temp", "Check valve-cap temperatures for a leaking valve; check the gas cooler."),
    ("ratio", "Check valve-cap temperatures; a leaking valve shifts the stage ratios."),
    ("jacket_water", "Check the fan, belt, radiator and coolant level."),
    ("flow", "Check suction pressure, valves and recycle/bypass valve position."),
]


@dataclass(frozen=True)
class MessageContext:
    """Everything a message says beyond the alert itself (read by :func:`load_context`)."""

    site_name: str = ""
    basin: str = ""
    model: str = ""
    basis: str = ""
    checks: tuple[str, ...] = ()
    trend: tuple[tuple[datetime, float], ...] = ()
    forecast: ForecastNote | None = None


@dataclass(frozen=True)
class Message:
    """One notification, in both forms."""

    title: str
    short: str
    full: str
    links: dict[str, str] = field(default_factory=dict)

    def body_for(self, scheme: str) -> str:
        """The form that suits an Apprise scheme: short for SMS-like services, else full."""
        return self.short if scheme in SHORT_FORM_SCHEMES else self.full


def metric_label(metric: str) -> str:
    """What technicians call a metric (``vibration``, ``oil pressure``, ``stage 2 ratio``)."""
    if metric in _SHORT_NAMES:
        return _SHORT_NAMES[metric]
    if metric.startswith("stage") and metric.endswith("_ratio"):
        return f"stage {metric[5:-6]} ratio"
    if metric.startswith("stage") and metric.endswith("_discharge_temp_f"):
        return f"stage {metric[5:6]} discharge temp"
    meta = METRIC_BY_NAME.get(metric)
    return meta.description if meta else metric.replace("_", " ")


def metric_unit(metric: str) -> str:
    """The metric's unit (``mm/s RMS``, ``F``, ``psig``), or an empty string."""
    meta = METRIC_BY_NAME.get(metric)
    return "" if meta is None or meta.unit == "ratio" else meta.unit


def _num(value: float) -> str:
    text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _with_unit(value: float | None, unit: str) -> str:
    if value is None or value != value:  # a data-missing alert has no observed value
        return "no data"
    if not unit:
        return _num(value)
    return f"{_num(value)} {unit}" if unit not in ("F",) else f"{_num(value)} F"


def title_for(alert: AlertState, event: str) -> str:
    """``COMP-0003 vibration critical - bearing wear suspected`` (prefixed for the end states)."""
    head = f"{alert.compressor_id} {metric_label(alert.metric)} {alert.severity}"
    if alert.diagnosis:
        head += f" - {alert.diagnosis}"
    if event == "resolved":
        return f"RESOLVED: {head}"
    if event == "cleared":
        return f"Back to normal, not acknowledged: {head}"
    if event == "reminder":
        return f"REMINDER: {head}"
    return head


def _trend_text(ctx: MessageContext, unit: str) -> str:
    if len(ctx.trend) < 2:
        return ""
    first, last = ctx.trend[0][1], ctx.trend[-1][1]
    hours = round((ctx.trend[-1][0] - ctx.trend[0][0]) / timedelta(hours=1))
    delta = last - first
    scale = max(abs(first), abs(last), 1e-9)
    direction = "steady" if abs(delta) / scale < 0.02 else ("rising" if delta > 0 else "falling")
    sign = "+" if delta >= 0 else "-"
    return (f"{direction} {sign}{_with_unit(abs(delta), unit)} over {hours} h "
            f"({' > '.join(_num(v) for _, v in ctx.trend)})")


def render(alert: AlertState, event: str, ctx: MessageContext, *,
           ack_url: str | None = None, view_url: str | None = None) -> Message:
    """Both forms of the message for one alert event.

    Args:
        alert: the alert as its workflow knows it.
        event: opened, escalated, severity_raised, reminder, cleared or resolved.
        ctx: site, rule basis, checks and recent trend.
        ack_url: the recipient's own acknowledgement link (omitted once nothing is to be
            acknowledged).
        view_url: the signed read-only history link (supervisors).
    """
    unit = metric_unit(alert.metric)
    label = metric_label(alert.metric)
    title = title_for(alert, event)
    where = ", ".join(p for p in (ctx.site_name or alert.site_id, ctx.basin) if p)
    observed = (f"{label} {_with_unit(alert.value, unit)} "
                f"vs {alert.threshold_severity or alert.severity} limit "
                f"{_with_unit(alert.threshold, unit)}")
    trend = _trend_text(ctx, unit)
    checks = list(ctx.checks) or default_checks(alert.metric)

    lead = {
        "opened": "New alert.",
        "severity_raised": "Alert raised to critical.",
        "escalated": (f"Not acknowledged after {_num(alert.escalation_delay_hours)} h: "
                      "escalated to supervisors."),
        "reminder": "Still critical and not acknowledged.",
        "cleared": "The reading is back to normal, but nobody acknowledged the alert.",
        "resolved": "Resolved" + (f" by {alert.resolved_by}" if alert.resolved_by else "")
                    + (f": {alert.resolve_reason}" if alert.resolve_reason else "."),
    }.get(event, "")

    hour = (alert.last_breach_hour or alert.breach_hour).astimezone(UTC)
    lines = [title, "", lead] if lead else [title, ""]
    lines += [
        f"Site: {where}" + (f" - {ctx.model}" if ctx.model else ""),
        f"Observed: {observed} (hour {hour:%Y-%m-%d %H:%M} UTC)",
    ]
    if ctx.basis:
        lines.append(f"Rule {alert.rule_id}: {ctx.basis}")
    else:
        lines.append(f"Rule: {alert.rule_id}")
    if trend:
        lines.append(f"Trend (hourly mean, last {TREND_HOURS} h): {trend}")
    lines += forecast_line(ctx.forecast if event != "resolved" else None)
    if alert.acknowledged_by and event in ("resolved", "cleared"):
        lines.append(f"Acknowledged by {alert.acknowledged_by}")
    if event != "resolved":
        lines += ["", "Recommended checks:", *(f"- {c}" for c in checks)]
    links: dict[str, str] = {}
    if ack_url and event != "resolved":
        links["ack"] = ack_url
        lines += ["", f"Acknowledge (one tap): {ack_url}"]
    if view_url:
        links["view"] = view_url
        lines += ["", f"Alert history: {view_url}"]
    full = "\n".join(lines).strip() + "\n"

    short_parts = [title, f"{_with_unit(alert.value, unit)} vs {_with_unit(alert.threshold, unit)}"]
    if ctx.site_name or alert.site_id:
        short_parts.append(ctx.site_name or alert.site_id)
    if event == "resolved":
        short_parts.append("resolved")
    short = ". ".join(short_parts)
    if ack_url and event != "resolved":
        room = SMS_LIMIT - len(ack_url) - len(" Ack: ")
        if len(short) > room:
            short = short[: max(room - 3, 20)].rstrip() + "..."
        short += f" Ack: {ack_url}"
    elif len(short) > SMS_LIMIT:
        short = short[: SMS_LIMIT - 3] + "..."
    return Message(title=title, short=short, full=full, links=links)


def default_checks(metric: str) -> list[str]:
    """The generic checks for a metric family (docs/DOMAIN.md), when the rule gives none."""
    for key, text in _DEFAULT_CHECKS:
        if key in metric:
            return [text]
    return ["Inspect the unit and compare with the other readings of this compressor."]


def _rule_text(definition: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    basis = definition.get("basis") or definition.get("description") or ""
    raw: Any = None
    for key in ("checks", "recommended_checks", "actions", "action", "recommendation"):
        if definition.get(key):
            raw = definition[key]
            break
    if isinstance(raw, str):
        checks: tuple[str, ...] = (raw,)
    elif isinstance(raw, list):
        checks = tuple(str(x) for x in raw if x)
    else:
        checks = ()
    return str(basis), checks


def load_context(conn: psycopg.Connection[Any], alert: AlertState,
                 hours: int = TREND_HOURS) -> MessageContext:
    """Site, rule basis and checks, and the recent hourly trend of the alert's metric.

    Must run inside :func:`altaviz.core.db.tenant` for the alert's organization. Missing pieces
    (a rule set not in the database, no aggregates yet) leave those lines out of the message
    rather than failing the notification.
    """
    q = queries("notify")
    comp = conn.execute(q["compressor_context"], {"compressor_id": alert.compressor_id}).fetchone()
    row = conn.execute(q["rule_definition"], {"rule_id": alert.rule_id,
                                               "rule_set_id": alert.rule_set_id}).fetchone()
    basis, checks = _rule_text(row[0]) if row and isinstance(row[0], dict) else ("", ())
    until = alert.last_breach_hour or alert.breach_hour
    trend = tuple((r[0], float(r[1])) for r in conn.execute(
        q["recent_trend"], {"compressor_id": alert.compressor_id, "metric": alert.metric,
                            "until": until, "hours": hours}) if r[1] is not None)
    return MessageContext(
        site_name=comp[1] if comp else "", basin=comp[2] if comp else "",
        model=comp[3] if comp else "", basis=basis, checks=checks, trend=trend,
        forecast=load_forecast(conn, alert.compressor_id, alert.rule_id, until,
                               metric_unit(alert.metric)))
