"""HTML pages of the acknowledgement server: small, readable on a phone, no JavaScript.

Every value from the database or the URL goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from datetime import UTC, datetime
from typing import Any

from altaviz.app.web.timeline import with_unit
from altaviz.core.messages import metric_label

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;
color:#1d2330;overflow-wrap:anywhere}
main{max-width:880px;margin:0 auto;padding:12px}
h1{font-size:1.3rem;margin:.4rem 0 .8rem}h2{font-size:1.1rem;margin:.2rem 0 .6rem}
.card{background:#fff;border-radius:8px;padding:14px;margin:12px 0;box-shadow:0 1px 3px #0002}
.critical{border-left:6px solid #c62828}.warning{border-left:6px solid #ef8f00}
.ok{border-left:6px solid #2e7d32}.bad{border-left:6px solid #6d4c41}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:4px 14px;margin:0}
dt{color:#5b6475}dd{margin:0;min-width:0}
button{font-size:1.1rem;padding:12px 24px;border:0;border-radius:6px;background:#1565c0;
color:#fff;width:100%;max-width:420px}
table{border-collapse:collapse;width:100%;font-size:.92rem;table-layout:fixed}
td,th{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8rem;background:#e3e6ea}
.sent{background:#c8e6c9}.failed{background:#ffcdd2}.src{color:#5b6475;font-size:.85rem}
pre{white-space:pre-wrap;word-break:break-word;font-size:.9rem;margin:.4rem 0}
a{color:#1565c0}
svg.chart{display:block;width:100%;height:auto;max-width:720px}
nav.top{background:#1d2330;color:#fff;padding:8px 12px;display:flex;flex-wrap:wrap;gap:6px 16px;
align-items:center}nav.top a{color:#fff;text-decoration:none}nav.top form{margin:0 0 0 auto}
nav.top button{font-size:.85rem;padding:4px 10px;background:#3b4457;width:auto}
ol.tl{list-style:none;padding:0;margin:0}ol.tl li{padding:6px 0 6px 12px;border-left:3px solid
#d5d9e0;margin-left:4px}ol.tl li.acknowledged,ol.tl li.resolved{border-left-color:#2e7d32}
ol.tl li.failed,ol.tl li.refused{border-left-color:#c62828}ol.tl li.escalated{border-left-color:
#ef8f00}ol.tl time{display:block;color:#5b6475;font-size:.8rem}
.filters{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:8px}
.filters label{display:flex;flex-direction:column;font-size:.85rem;color:#5b6475}
select,input{font-size:1rem;padding:6px;min-width:0;max-width:100%;width:100%}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0}
ul.alerts{list-style:none;padding:0;margin:0}ul.alerts li{margin:8px 0}
ul.alerts a{display:block;text-decoration:none;color:inherit}
.row{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
.failing{padding:8px 0;border-bottom:1px solid #e3e6ea}
td:first-child,th:first-child{width:42%}
"""

#: The one style sheet of every page (server pages and console templates alike).
CSS = _CSS

#: The Content-Security-Policy source allowing exactly this style sheet (by its hash), so the
#: policy needs no ``'unsafe-inline'``.
STYLE_SRC = "'sha256-" + base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode() + "'"


def esc(value: Any) -> str:
    """HTML-escaped text of any value (None as empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def when(value: datetime | None) -> str:
    """A timestamp in UTC, as technicians' logs write it."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def page(title: str, body: str) -> str:
    """A complete HTML document."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<meta name=referrer content=no-referrer>"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main></body></html>")


def problem_page(title: str, message: str, hint: str = "") -> str:
    """The page for a link that cannot be used: says why and what to do instead."""
    extra = f"<p>{esc(hint)}</p>" if hint else ""
    return page(title, f"<div class='card bad'><h1>{esc(title)}</h1><p>{esc(message)}</p>"
                       f"{extra}<p class=src>Nothing was changed.</p></div>")


def alert_summary(alert: dict[str, Any]) -> str:
    """The alert's key facts as a definition list, in human metric names and units."""
    metric = alert["metric"]
    rows = [
        ("Compressor", f"{alert['compressor_id']} ({alert.get('model') or ''})"),
        ("Site", f"{alert.get('site_name') or alert.get('site_id')}, {alert.get('basin') or ''}"),
        ("Observed", f"{metric_label(metric)} {with_unit(alert.get('value'), metric)} "
                     f"(limit {with_unit(alert.get('threshold'), metric)})"),
        ("Severity", alert["severity"]),
        ("State", f"{alert['state']} ({alert['ack_state']}, condition {alert['condition_state']})"),
        ("Opened", when(alert.get("opened_at"))),
    ]
    if alert.get("forecast"):
        rows.append(("Forecast", f"{alert['forecast']} (80% band, running time)"))
    if alert.get("acknowledged_at"):
        rows.append(("Acknowledged", f"{when(alert['acknowledged_at'])} by "
                                     f"{alert.get('acknowledged_by') or '?'} "
                                     f"via {alert.get('ack_channel') or '?'}"))
    if alert.get("resolved_at"):
        rows.append(("Resolved", f"{when(alert['resolved_at'])} by "
                                 f"{alert.get('resolved_by') or '?'}: "
                                 f"{alert.get('resolve_reason') or ''}"))
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows) + "</dl>"


def confirm_page(alert: dict[str, Any], contact_name: str, action_path: str) -> str:
    """GET /ack/...: the alert and one button; opening it changes nothing."""
    title = (f"Acknowledge {alert['compressor_id']} {metric_label(alert['metric'])} "
             f"{alert['severity']}")
    effect = ("records that you saw it and closes the alert (the condition has cleared)"
              if alert.get("condition_state") == "cleared"
              else "tells everyone you are on it and stops the escalation")
    return page(title, (
        f"<div class='card {esc(alert['severity'])}'><h1>{esc(title)}</h1>"
        f"{alert_summary(alert)}</div>"
        f"<div class=card><p>Acknowledging as <b>{esc(contact_name)}</b> {effect}.</p>"
        f"<form method=post action='{esc(action_path)}'>"
        f"<button type=submit>Confirm acknowledgement</button></form></div>"))


def result_page(title: str, message: str, alert: dict[str, Any] | None, *, ok: bool) -> str:
    """The outcome of POST /ack/...."""
    summary = alert_summary(alert) if alert else ""
    return page(title, f"<div class='card {'ok' if ok else 'bad'}'><h1>{esc(title)}</h1>"
                       f"<p>{esc(message)}</p>{summary}</div>")


_URL = re.compile(r"https?://[^\s<>\"']+")


def linkify(text: str) -> str:
    """Escaped text with http(s) URLs made clickable."""
    out, last = [], 0
    for m in _URL.finditer(text):
        out.append(esc(text[last:m.start()]))
        url = m.group(0)
        out.append(f"<a href='{esc(url)}'>{esc(url)}</a>")
        last = m.end()
    out.append(esc(text[last:]))
    return "".join(out)


def inbox_page(messages: list[dict[str, Any]], mailbox: str | None) -> str:
    """GET /inbox: what the demo's local receiver got, newest first, links clickable."""
    cards = "".join(
        f"<div class=card id='msg-{m['message_id']}'><div class=src>{esc(when(m['received_at']))}"
        f" &middot; to <b>{esc(m['mailbox'])}</b> &middot; {esc(m.get('notify_type') or '')}</div>"
        f"<h3>{esc(m['title'])}</h3><pre>{linkify(m['body'])}</pre></div>" for m in messages)
    heading = f"Demo inbox: {esc(mailbox)}" if mailbox else "Demo inbox"
    empty = "" if messages else "<div class=card>No messages yet.</div>"
    return page(heading, f"<h1>{heading}</h1>{cards}{empty}")
