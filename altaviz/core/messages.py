"""Notification messages written for a technician reading a phone in a truck between sites.

The title is the headline, ``COMP-0022 frame vibration CRITICAL 12.6 mm/s (limit 12)``: unit,
what, how bad, the reading and its limit, in the names and units technicians use. The body
does not repeat it; it says what happened to the alert, what the reading likely means, the
trend over the hours the unit ran (arrows between points; the direction always matches the
values), where, what to check, and one short acknowledgement link. Durations are written in
minutes, hours or days. A no-data rule's value is hours without data, never a reading of its
metric, so data-missing and data-quality notices have their own wording. Two forms: a short
one for SMS and pagers, and a full one for email, chat and webhooks. Rendering is pure (no
I/O); :func:`load_context` reads what it needs from PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from altaviz.core.db import queries
from altaviz.core.forecast_text import ForecastNote, forecast_line, load_forecast
from altaviz.core.payloads import AlertState
from altaviz.core.telemetry import METRIC_BY_NAME

TREND_HOURS = 6
#: A unit ran through an hour when its slowest speed in it was at least this share of rated
#: (the rules' running gate uses the same share).
RUNNING_SHARE = 0.5
SMS_LIMIT = 320  # two concatenated SMS segments
#: Metrics a no-data rule watches to notice a silent unit or gateway (every metric stops).
UNIT_SILENCE_METRICS = frozenset({"speed_rpm", "*"})

#: Apprise schemes that end up as an SMS or a pager line: they get the short form.
SHORT_FORM_SCHEMES = frozenset({
    "sns", "twilio", "sinch", "nexmo", "vonage", "clickatell", "msg91", "bulksms", "bulkvs",
    "d7sms", "kavenegar", "messagebird", "plivo", "smseagle", "smsmgr", "signal", "signals",
    "threema", "freemobile", "seven", "burstsms", "httpsms", "voipms", "africastalking",
    "46elks", "brevo", "esendex", "smpp", "smpps", "textbelt", "tgram",
})

# Short names technicians use, for the metrics whose full description is too long for a title.
_SHORT_NAMES = {
    "vibration_frame_mm_s": "frame vibration",
    "vibration_cylinder_mm_s": "cylinder vibration",
    "vibration_skid_mm_s": "skid vibration",
    "bearing_temp_max_f": "main-bearing temp",
    "bearing_temp_min_f": "coolest main-bearing temp",
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
    "ambient_temp_f": "ambient temp",
}

#: Units as written in a message (the telemetry catalogue's ``mm/s RMS`` is implied).
_UNITS = {"mm/s RMS": "mm/s", "F": "°F"}

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
    """Everything a message says beyond the alert itself (read by :func:`load_context`).

    ``trend`` holds hourly means of hours the unit ran (a stopped unit's near-zero hour is not
    a trend); ``rule_kind`` tells a no-data rule, whose value is hours without data, from a
    level rule.
    """

    site_name: str = ""
    basin: str = ""
    model: str = ""
    basis: str = ""
    checks: tuple[str, ...] = ()
    trend: tuple[tuple[datetime, float], ...] = ()
    rule_kind: str = ""
    forecast: ForecastNote | None = None
    #: A stuck rule's hours unchanged before it fires (its ``unchanged_hours``).
    unchanged_hours: int = 0
    #: The alarm level a stuck reading sits beyond, as (``above`` or ``below``, level): the
    #: first absolute level of a threshold rule on the metric that the frozen value is at or
    #: past (the machine rules do not fire on a frozen reading; the notice says it instead).
    alarm: tuple[str, float] | None = None


@dataclass(frozen=True)
class Message:
    """One notification, in both forms.

    The title is the headline; neither body repeats it, because Apprise shows the title above
    the body (or, for services without titles such as SMS, puts it in front of the body).
    """

    title: str
    short: str
    full: str
    links: dict[str, str] = field(default_factory=dict)

    def body_for(self, scheme: str) -> str:
        """The form that suits an Apprise scheme: short for SMS-like services, else full."""
        return self.short if scheme in SHORT_FORM_SCHEMES else self.full


def metric_label(metric: str) -> str:
    """What technicians call a metric (``frame vibration``, ``oil pressure``, ``stage 2
    ratio``)."""
    if metric in _SHORT_NAMES:
        return _SHORT_NAMES[metric]
    m = re.fullmatch(r"stage(\d+)_(ratio|discharge_temp_f|suction_psig|discharge_psig)", metric)
    if m:
        what = {"ratio": "ratio", "discharge_temp_f": "discharge temp",
                "suction_psig": "suction pressure", "discharge_psig": "discharge pressure"}
        return f"stage {m.group(1)} {what[m.group(2)]}"
    meta = METRIC_BY_NAME.get(metric)
    return meta.description if meta else metric.replace("_", " ")


def metric_unit(metric: str) -> str:
    """The metric's unit as people write it (``mm/s``, ``°F``, ``psig``), or an empty string
    for a ratio."""
    meta = METRIC_BY_NAME.get(metric)
    if meta is None or meta.unit == "ratio":
        return ""
    return _UNITS.get(meta.unit, meta.unit)


def number(value: float) -> str:
    """A reading rounded as a gauge shows it: three significant figures at most, no trailing
    zeros (``12.6``, ``12``, ``215``, ``0.02``, ``3.14``)."""
    if value != value:  # NaN
        return "?"
    magnitude = abs(value)
    decimals = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2
    text = f"{value:.{decimals}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text


def format_value(value: float | None, metric: str) -> str:
    """A value of a metric with its unit (``12.6 mm/s``, ``215 °F``, ``3.1``); ``no data``
    for a missing value."""
    if value is None or value != value:
        return "no data"
    unit = metric_unit(metric)
    return f"{number(value)} {unit}" if unit else number(value)


def duration(hours: float) -> str:
    """A duration in the unit people say: ``1 minute``, ``45 minutes``, ``4 hours``, ``1.5
    hours``, ``3 days``."""
    minutes = round(hours * 60)
    if minutes < 60:
        return _plural(max(minutes, 0), "minute")
    if hours < 48:
        return _plural(round(hours * 2) / 2, "hour")
    return _plural(round(hours / 24 * 2) / 2, "day")


def _plural(n: float, word: str) -> str:
    shown = number(n)
    return f"{shown} {word}" if shown == "1" else f"{shown} {word}s"


def _kind(alert: AlertState, ctx: MessageContext) -> str:
    """``data_missing`` (the unit or its gateway is silent), ``sensor_missing`` (one channel
    of a reporting unit is silent: a data-quality notice), ``sensor_stuck`` (one channel
    repeats one value: a data-quality notice), ``sensor_offline`` (one carried channel sends
    nothing while the unit runs: a data-quality notice) or ``level`` (a reading crossed a
    limit)."""
    if ctx.rule_kind == "stuck":
        return "sensor_stuck"
    if ctx.rule_kind == "offline":
        return "sensor_offline"
    if ctx.rule_kind != "no_data" and alert.metric != "*":
        return "level"
    return "data_missing" if alert.metric in UNIT_SILENCE_METRICS else "sensor_missing"


def title_for(alert: AlertState, event: str, ctx: MessageContext | None = None) -> str:
    """The headline: ``COMP-0022 frame vibration CRITICAL 12.6 mm/s (limit 12)``, with a
    prefix for the events that are not news of a breach (``RESOLVED``, ``REMINDER``, ...)."""
    ctx = ctx or MessageContext()
    kind = _kind(alert, ctx)
    severity = alert.severity.upper()
    if alert.stop is not None:
        head = stop_headline(alert)
    elif kind == "sensor_stuck":
        head = (f"{alert.compressor_id} {metric_label(alert.metric)} reads "
                f"{format_value(alert.value, alert.metric)}{_beyond_alarm(alert, ctx)} "
                f"unchanged for {duration(unchanged_hours(alert, ctx))}: check the transmitter")
    elif kind == "sensor_offline":
        silent = "" if alert.value is None else f" for {duration(alert.value)}"
        head = (f"{alert.compressor_id} {metric_label(alert.metric)} has sent no reading"
                f"{silent} while running: check the transmitter and its wiring")
    elif kind == "level":
        # promoted to critical by the timer, the reading still crossed only the warning limit
        which = f"{alert.threshold_severity} " if alert.threshold_severity not in (
            None, alert.severity) else ""
        limit = "" if alert.threshold is None else \
            f" ({which}limit {number(alert.threshold)})"
        head = (f"{alert.compressor_id} {metric_label(alert.metric)} {severity} "
                f"{format_value(alert.value, alert.metric)}{limit}")
    else:
        hours = "" if alert.value is None else f" for {duration(alert.value)}"
        what = "no data" if kind == "data_missing" else \
            f"no {metric_label(alert.metric)} data"
        head = f"{alert.compressor_id} {what}{hours} {severity}"
    prefix = _TITLE_PREFIX.get(event, "")
    return f"{prefix}{head}"


def _beyond_alarm(alert: AlertState, ctx: MessageContext) -> str:
    """``, under the 50 psig alarm,`` when a stuck reading sits beyond an alarm level."""
    if ctx.alarm is None:
        return ""
    side, level = ctx.alarm
    where = "under" if side == "below" else "over"
    return f", {where} the {format_value(level, alert.metric)} alarm,"


def frozen_alarm(value: float | None, thresholds: list[dict[str, Any]],
                 model: str) -> tuple[str, float] | None:
    """The first alarm level (a threshold rule's warning, else its critical, as overridden for
    ``model``; absolute levels of ``above`` and ``below`` rules only) that ``value`` is at or
    past, from the rule definitions in ``thresholds``."""
    if value is None:
        return None
    for d in thresholds:
        side = d.get("comparison")
        if side not in ("above", "below"):
            continue
        override = (d.get("models") or {}).get(model) or {}
        level = None
        for key in ("warning", "critical"):
            spec = override.get(key) or d.get(key)
            if isinstance(spec, dict):
                level = spec.get("absolute")
                break
        if not isinstance(level, int | float):
            continue
        if (value <= level) if side == "below" else (value >= level):
            return str(side), float(level)
    return None


def unchanged_hours(alert: AlertState, ctx: MessageContext) -> float:
    """How long a stuck channel has read one value: the rule's hours before it fires, plus
    the hours it has kept firing since."""
    since = (alert.last_breach_hour or alert.breach_hour) - alert.breach_hour
    return ctx.unchanged_hours + since / timedelta(hours=1)


def stop_headline(alert: AlertState) -> str:
    """``COMP-0012 shut down at 14:20 UTC: speed 0 rpm, last discharge temperature 348 °F``:
    a stop rule's alert says when the unit stopped (to the 10-minute reading) and how hot it
    ran, which is what the site is called about, instead of an hourly mean speed."""
    stop = alert.stop
    assert stop is not None
    at = stop.stopped_at.astimezone(UTC)
    when = f"{at:%H:%M} UTC" if at.date() == alert.breach_hour.astimezone(UTC).date() else \
        f"{at:%Y-%m-%d %H:%M} UTC"
    temp = format_value(stop.discharge_temp_f, "discharge_temp_max_f")
    facts = [f"speed {format_value(stop.speed_rpm, 'speed_rpm')}"
             if stop.speed_rpm is not None else "",
             f"last discharge temperature {temp}" if stop.discharge_temp_f is not None else ""]
    detail = ", ".join(f for f in facts if f)
    return f"{alert.compressor_id} shut down at {when}" + (f": {detail}" if detail else "")


_TITLE_PREFIX = {"resolved": "RESOLVED ", "cleared": "BACK TO NORMAL ",
                 "reminder": "REMINDER ", "escalated": "ESCALATED "}


def trend_text(trend: tuple[tuple[datetime, float], ...], metric: str) -> str:
    """``10.3 → 10.8 → 11.2 → 11.7 → 12.6 mm/s, rising ↑ 2.3 in 4 hours``.

    The direction comes from the values shown (first to last, within 2 % is steady), so it
    can never contradict them; arrows separate the points because ``>`` reads as "greater
    than".
    """
    if len(trend) < 2:
        return ""
    values = [v for _, v in trend]
    first, last = values[0], values[-1]
    delta = last - first
    scale = max(abs(first), abs(last), 1e-9)
    hours = duration((trend[-1][0] - trend[0][0]) / timedelta(hours=1))
    if abs(delta) / scale < 0.02:
        direction = f"steady over {hours}"
    else:
        direction = (f"rising ↑ {number(abs(delta))}" if delta > 0 else
                     f"falling ↓ {number(abs(delta))}") + f" in {hours}"
    unit = metric_unit(metric)
    points = " → ".join(number(v) for v in values) + (f" {unit}" if unit else "")
    return f"{points}, {direction}"


def _lead(alert: AlertState, event: str) -> str:
    """What happened to the alert, in one sentence."""
    if event == "escalated":
        return (f"Not acknowledged after {duration(alert.escalation_delay_hours)}: "
                "sent to supervisors.")
    if event == "resolved":
        text = ("Resolved" + (f" by {alert.resolved_by}" if alert.resolved_by else "")
                + (f": {alert.resolve_reason}" if alert.resolve_reason else ""))
        return text.rstrip(".") + "."
    return {
        "opened": "New alert.",
        "severity_raised": "Raised to critical.",
        "reminder": "Still critical and not acknowledged.",
        "cleared": "Back to normal, but nobody acknowledged the alert.",
    }.get(event, "")


def _observed(alert: AlertState, kind: str) -> str:
    """The reading against the limit it crossed, or the silence against its limit."""
    limit_severity = alert.threshold_severity or alert.severity
    if kind == "sensor_stuck":
        return (f"Data quality: the {metric_label(alert.metric)} transmitter repeats "
                f"{format_value(alert.value, alert.metric)} while the unit runs. This is not a "
                "machine alert; the rules that read it do not judge the machine until it "
                "moves again.")
    if kind == "sensor_offline":
        silent = "" if alert.value is None else f" for {duration(alert.value)}"
        return (f"Data quality: the {metric_label(alert.metric)} transmitter has sent no "
                f"reading{silent} while the unit ran. This is not a machine alert; the rules "
                "that read it do not judge the machine until it reports again.")
    if kind == "level":
        return (f"{metric_label(alert.metric)} {format_value(alert.value, alert.metric)}, "
                f"{limit_severity} limit {format_value(alert.threshold, alert.metric)}")
    silent = "no data" if alert.value is None else duration(alert.value)
    limit = "" if alert.threshold is None else \
        f" ({limit_severity} after {duration(alert.threshold)})"
    if kind == "data_missing":
        return f"No readings from the unit for {silent}{limit}."
    return (f"Data quality: the {metric_label(alert.metric)} sensor has sent nothing for "
            f"{silent}{limit}.")


def _meaning(alert: AlertState, kind: str) -> str:
    """What the alert likely means, as the rule's diagnosis says it."""
    if alert.diagnosis:
        text = alert.diagnosis.strip().rstrip(".")
        if text[:2].istitle():  # "No hourly ..." reads on as "no hourly ...", "ISO" stays
            text = text[0].lower() + text[1:]
        return f"Likely: {text}."
    if kind == "data_missing":
        return "Likely: the gateway, its link or the unit is down. Missing data is never normal."
    if kind == "sensor_missing":
        return ("Likely: a failed sensor or loose wiring; this reading is not watched while it "
                "is missing.")
    if kind == "sensor_stuck":
        return "Likely: a frozen transmitter or a gateway repeating its last value."
    if kind == "sensor_offline":
        return "Likely: a failed transmitter, a broken wire or a gateway input that dropped out."
    return ""


def held_phrase(alert: AlertState) -> str:
    """``Silenced for 2 hours, breach began at 2026-03-01 10:00 UTC (3 hours ago).``: a
    notification held back by a silence or maintenance window says how long the problem has
    been going on."""
    if alert.held_since is None or alert.held_until is None:
        return ""
    held = (alert.held_until - alert.held_since) / timedelta(hours=1)
    began = alert.breach_hour.astimezone(UTC)
    ago = (alert.held_until - alert.breach_hour) / timedelta(hours=1)
    return (f"Silenced for {duration(held)}, breach began at {began:%Y-%m-%d %H:%M} UTC "
            f"({duration(ago)} ago).")


#: An hour evaluated this long after it ended came from a backlog (a gateway offline, files
#: dropped late): the hourly run evaluates an hour about five minutes after it ends.
LATE_AFTER = timedelta(hours=2)


def late_phrase(breach_hour: datetime, noticed_at: datetime) -> str:
    """``data arrived 2 days late`` for an alert opened long after its breach hour, else ``""``.

    A technician must know that the reading is old, and the escalation clock runs from the
    notification (the alert's opening), not from the breach hour.
    """
    late = noticed_at - (breach_hour + timedelta(hours=1))
    if late < LATE_AFTER:
        return ""
    if late >= timedelta(days=1):
        days = round(late / timedelta(days=1))
        return f"data arrived {days} day{'s' if days != 1 else ''} late"
    hours = round(late / timedelta(hours=1))
    return f"data arrived {hours} hours late"


def render(alert: AlertState, event: str, ctx: MessageContext, *,
           ack_url: str | None = None, view_url: str | None = None) -> Message:
    """Both forms of the message for one alert event.

    The full form is a list of lines, each added (or left out when empty) in reading order,
    so another sentence is one more ``add(...)``.

    Args:
        alert: the alert as its workflow knows it.
        event: opened, escalated, severity_raised, reminder, cleared or resolved.
        ctx: site, rule basis, checks and recent running-hours trend.
        ack_url: the recipient's own (short) acknowledgement link; left out once nothing is
            to be acknowledged.
        view_url: the signed read-only history link (supervisors).
    """
    kind = _kind(alert, ctx)
    title = title_for(alert, event, ctx)
    hour = (alert.last_breach_hour or alert.breach_hour).astimezone(UTC)
    where = ", ".join(p for p in (ctx.site_name or alert.site_id, ctx.basin) if p)
    checks = list(ctx.checks) or default_checks(alert.metric, kind)
    ack = ack_url if event != "resolved" and alert.ack_state != "acknowledged" else None
    lines: list[str] = []

    def add(*texts: str | None) -> None:
        lines.extend(t for t in texts if t is not None)

    add(held_phrase(alert) or None)
    add(_lead(alert, event))
    add(_meaning(alert, kind) or None)
    add(_observed(alert, kind) if kind != "level" else None)
    add(f"Trend over running hours: {trend_text(ctx.trend, alert.metric)}"
        if kind == "level" and len(ctx.trend) >= 2 else None)
    add(*forecast_line(ctx.forecast if event != "resolved" else None))
    add(f"Where: {where}" + (f" ({ctx.model})" if ctx.model else ""))
    add(f"Hour: {hour:%Y-%m-%d %H:%M} UTC")
    late = late_phrase(alert.breach_hour, alert.opened_at)
    add(f"Late: {late}; the escalation clock started with this notification" if late else None)
    add(f"Acknowledged by {alert.acknowledged_by}."
        if alert.acknowledged_by and event in ("resolved", "cleared") else None)
    if event != "resolved":
        add("", "Check:", *(f"- {c}" for c in checks))
    add(f"Why this limit: {ctx.basis}" if ctx.basis and event != "resolved" else None)
    links: dict[str, str] = {}
    if ack:
        links["ack"] = ack
        add("", f"Acknowledge: {ack}")
    if view_url:
        links["view"] = view_url
        add("" if not ack else None, f"History: {view_url}")
    full = "\n".join(lines).strip() + "\n"
    return Message(title=title, short=_short(alert, event, ctx, kind, ack), full=full,
                   links=links)


def _short(alert: AlertState, event: str, ctx: MessageContext, kind: str,
           ack: str | None) -> str:
    """The SMS form: lead, likely meaning and site, cut to fit, then the link whole."""
    parts = [p for p in (_lead(alert, event), _meaning(alert, kind),
                         ctx.site_name or alert.site_id,
                         late_phrase(alert.breach_hour, alert.opened_at)) if p]
    text = " ".join(p if p.endswith(".") else p + "." for p in parts)
    tail = f" Ack: {ack}" if ack else ""
    room = SMS_LIMIT - len(tail)
    if len(text) > room:
        text = text[: max(room - 3, 0)].rstrip() + "..."
    return (text + tail).strip()


def default_checks(metric: str, kind: str = "level") -> list[str]:
    """The generic checks for a metric family (docs/DOMAIN.md), when the rule gives none."""
    if kind == "data_missing":
        return ["Check the field gateway and its link.",
                "Call the site to confirm whether the unit is running."]
    if kind == "sensor_missing":
        return [f"Check the {metric_label(metric)} sensor, its wiring and the gateway's "
                "channel configuration."]
    if kind == "sensor_stuck":
        return [f"Check the {metric_label(metric)} transmitter against a local gauge, its "
                "power and wiring, and the gateway's channel."]
    if kind == "sensor_offline":
        return [f"Check the {metric_label(metric)} transmitter and its wiring (power, loop "
                "current, connector), and the gateway's channel."]
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
    """Site, rule basis, checks and kind, and the recent trend of the alert's metric.

    The trend keeps only hours the unit ran throughout (its slowest speed in the hour at least
    :data:`RUNNING_SHARE` of rated): the hour a unit stops reads near zero and is not a trend.

    Must run inside :func:`altaviz.core.db.tenant` for the alert's organization. Missing pieces
    (a rule set not in the database, no aggregates yet) leave those lines out of the message
    rather than failing the notification.
    """
    q = queries("notify")
    comp = conn.execute(q["compressor_context"], {"compressor_id": alert.compressor_id}).fetchone()
    row = conn.execute(q["rule_definition"], {"rule_id": alert.rule_id,
                                               "rule_set_id": alert.rule_set_id}).fetchone()
    definition = row[0] if row and isinstance(row[0], dict) else {}
    basis, checks = _rule_text(definition)
    alarm = None
    if row and definition.get("kind") == "stuck":
        thresholds = [r[0] for r in conn.execute(q["metric_thresholds"], {
            "rule_set_id": row[1], "metric": alert.metric}) if isinstance(r[0], dict)]
        alarm = frozen_alarm(alert.value, thresholds, comp[3] if comp else "")
    until = alert.last_breach_hour or alert.breach_hour
    trend = tuple((r[0], float(r[1])) for r in conn.execute(
        queries("messages")["running_trend"],
        {"compressor_id": alert.compressor_id, "metric": alert.metric, "until": until,
         "hours": hours, "running_share": RUNNING_SHARE}) if r[1] is not None)
    return MessageContext(
        site_name=comp[1] if comp else "", basin=comp[2] if comp else "",
        model=comp[3] if comp else "", basis=basis, checks=checks, trend=trend,
        rule_kind=str(definition.get("kind") or ""),
        unchanged_hours=int(definition.get("unchanged_hours") or 0), alarm=alarm,
        forecast=load_forecast(conn, alert.compressor_id, alert.rule_id, until,
                               metric_unit(alert.metric)))
