"""Jinja2 rendering of the alert page and the console's pages.

One environment with autoescaping on: every value from the database or the URL is escaped,
and only the chart (built from numbers by :mod:`altaviz.app.web.chart`) is marked safe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from altaviz.app.web import pages, timeline
from altaviz.app.web.chart import fmt_value, render_chart
from altaviz.app.web.console_store import AlertDetail, Series
from altaviz.core.messages import metric_label, metric_unit

TEMPLATES = Path(__file__).resolve().parent / "templates"

STATE_WORDS = {"open": "open", "acknowledged": "acknowledged",
               "cleared_unacknowledged": "cleared, not acknowledged", "resolved": "resolved",
               "active": "not resolved"}


def short_when(value: datetime | None) -> str:
    """``Mar 02 10:00 UTC``: what a person compares at a glance."""
    return "" if value is None else value.astimezone(UTC).strftime("%b %d %H:%M UTC")


def chart_svg(series: Series, *, breach_hour: datetime | None = None,
              acknowledged_at: datetime | None = None) -> Markup:
    """The series as inline SVG, safe to insert in a template."""
    return Markup(render_chart(
        series.points, start=series.start, end=series.end, unit=metric_unit(series.metric),
        label=metric_label(series.metric), warning=series.warning, critical=series.critical,
        breach_hour=breach_hour, acknowledged_at=acknowledged_at))


def _pct(share: float) -> str:
    return f"{fmt_value(share * 100)}%"


def check_text(row: dict[str, Any]) -> str:
    """A data-quality check's measurement in words (``last reading 2 h ago (limit 1 h 15
    min)``, ``3.2% of readings missing (limit 5%)``); the unit depends on the check."""
    kind, m, t = row["check_type"], float(row["measured"]), float(row["threshold"])
    details = row.get("details") if isinstance(row.get("details"), dict) else {}
    assert isinstance(details, dict)
    if kind == "channels" and isinstance(details.get("missing"), dict) and details["missing"]:
        worst = sorted(details["missing"].items(), key=lambda kv: -float(kv[1] or 0))[:2]
        return (f"{_pct(m)} of readings missing (limit {_pct(t)}), worst: "
                + ", ".join(metric_label(str(c)) for c, _ in worst))
    if kind == "sensor_offline" and details.get("offline"):
        return "silent while running: " + ", ".join(
            metric_label(str(c)) for c in details["offline"])
    if kind == "freshness":
        return (f"last reading {timeline.duration(m / 60)} ago "
                f"(limit {timeline.duration(t / 60)})")
    if kind in ("completeness", "channels"):
        return f"{_pct(m)} of readings missing (limit {_pct(t)})"
    if kind == "consistency":
        return f"{_pct(m)} of rows quarantined (limit {_pct(t)})"
    if kind == "accuracy":
        channel = details.get("worst_channel")
        wrong = (details.get("channels") or {}).get(channel) if channel else None
        if wrong:
            value = float(wrong.get("stuck_value", 0.0))
            what = f"stuck at {fmt_value(value)}" if wrong.get("stuck") else "outliers"
            return (f"{metric_label(str(channel))} {what}: {_pct(m)} of readings "
                    f"(limit {_pct(t)})")
        return f"{_pct(m)} of readings wrong (limit {_pct(t)})"
    if kind == "sensor_offline":
        n = int(m)
        return f"{n} carried channel{'' if n == 1 else 's'} silent while running"
    return f"{fmt_value(m)} (limit {fmt_value(t)})"


def what(alert: dict[str, Any]) -> str:
    """What the alert is about: the metric's name, or "data missing" for a no-data rule (whose
    metric is only the channel it watches), "<channel> offline" for an offline rule."""
    if alert.get("rule_kind") == "offline":
        return f"{metric_label(alert['metric'])} offline"
    return "data missing" if alert.get("rule_kind") == "no_data" else metric_label(
        alert["metric"])


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        default=True, default_for_string=True), undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update({
        "when": short_when, "full_when": pages.when, "label": metric_label,
        "value": lambda v, metric: timeline.with_unit(v, metric), "num": fmt_value,
        "state": lambda s: STATE_WORDS.get(s, s), "path": lambda s: quote(str(s), safe="/"),
        "q": lambda s: quote(str(s), safe=""), "channel": timeline.channel_name,
        "check": check_text, "what": what, "observed": lambda a: timeline.observed(a)[0],
        "limit": lambda a: timeline.observed(a)[1]})
    env.globals["css"] = Markup(pages.CSS)
    return env


ENV = _env()


def render(template: str, **context: Any) -> str:
    """A complete page from ``templates/<template>``."""
    context.setdefault("user", None)
    return ENV.get_template(template).render(**context)


def temporal_link(ui_url: str | None, namespace: str, alert: dict[str, Any]) -> str | None:
    """The alert's workflow history in the Temporal Web UI (its own latest run when known,
    else a search for the alert's id)."""
    if not ui_url:
        return None
    base = f"{ui_url.rstrip('/')}/namespaces/{quote(namespace)}"
    run_ids = list(alert.get("run_ids") or []) or (
        [alert["run_id"]] if alert.get("run_id") else [])
    if run_ids:
        return (f"{base}/workflows/{quote(alert['workflow_id'], safe='')}/"
                f"{quote(run_ids[-1], safe='')}/history")
    query = quote(f'AltavizAlertId="{alert["alert_id"]}"', safe="")
    return f"{base}/workflows?query={query}"


def alert_page(detail: AlertDetail, *, temporal_url: str | None, user: Any = None,
               ack_action: str | None = None, contact_name: str | None = None) -> str:
    """The alert page: summary, chart, domain timeline, and (for an ack link) the button."""
    alert = detail.alert
    names = {**{n["contact_id"]: n["name"] for n in detail.notifications if n.get("name")},
             **detail.names}
    entries = timeline.build(alert, detail.events, detail.notifications, detail.link_uses,
                             names)
    acked_by = alert.get("acknowledged_by")
    head = f"{alert['compressor_id']} {what(alert)} {alert['severity'].upper()}"
    return render("alert.html", alert=alert, entries=entries, head=head,
                  chart=chart_svg(detail.series, breach_hour=alert["breach_hour"],
                                  acknowledged_at=alert.get("acknowledged_at")),
                  series=detail.series, temporal_url=temporal_url, user=user,
                  ack_action=ack_action, contact_name=contact_name,
                  acked_by_name=names.get(acked_by, acked_by) if acked_by else None)
