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

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f4f5f7;
color:#1d2330}
main{max-width:880px;margin:0 auto;padding:16px}
h1{font-size:1.35rem;margin:.4rem 0 1rem}
.card{background:#fff;border-radius:8px;padding:16px;margin:12px 0;box-shadow:0 1px 3px #0002}
.critical{border-left:6px solid #c62828}.warning{border-left:6px solid #ef8f00}
.ok{border-left:6px solid #2e7d32}.bad{border-left:6px solid #6d4c41}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}dt{color:#5b6475}
button{font-size:1.2rem;padding:14px 28px;border:0;border-radius:6px;background:#1565c0;
color:#fff;width:100%;max-width:420px}
table{border-collapse:collapse;width:100%;font-size:.92rem}
td,th{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8rem;background:#e3e6ea}
.sent{background:#c8e6c9}.failed{background:#ffcdd2}.src{color:#5b6475;font-size:.8rem}
pre{white-space:pre-wrap;word-break:break-word;font-size:.9rem;margin:.4rem 0}
a{color:#1565c0}
"""

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
    """The alert's key facts as a definition list."""
    rows = [
        ("Compressor", f"{alert['compressor_id']} ({alert.get('model') or ''})"),
        ("Site", f"{alert.get('site_name') or alert.get('site_id')}, {alert.get('basin') or ''}"),
        ("Rule", alert["rule_id"]),
        ("Observed", f"{alert['metric']} = {_num(alert.get('value'))} "
                     f"(limit {_num(alert.get('threshold'))})"),
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


def _num(value: Any) -> str:
    if value is None:
        return "?"
    return f"{float(value):.4g}"


def confirm_page(alert: dict[str, Any], contact_name: str, action_path: str) -> str:
    """GET /ack/...: the alert and one button; opening it changes nothing."""
    title = f"Acknowledge {alert['compressor_id']} {alert['metric']} {alert['severity']}"
    return page(title, (
        f"<div class='card {esc(alert['severity'])}'><h1>{esc(title)}</h1>"
        f"{alert_summary(alert)}</div>"
        f"<div class=card><p>Acknowledging as <b>{esc(contact_name)}</b> tells everyone you "
        f"are on it and stops the escalation.</p>"
        f"<form method=post action='{esc(action_path)}'>"
        f"<button type=submit>Confirm acknowledgement</button></form></div>"))


def result_page(title: str, message: str, alert: dict[str, Any] | None, *, ok: bool) -> str:
    """The outcome of POST /ack/...."""
    summary = alert_summary(alert) if alert else ""
    return page(title, f"<div class='card {'ok' if ok else 'bad'}'><h1>{esc(title)}</h1>"
                       f"<p>{esc(message)}</p>{summary}</div>")


def timeline_page(alert: dict[str, Any], entries: list[tuple[datetime, str, str, str]],
                  temporal_url: str | None, temporal_note: str) -> str:
    """GET /alerts/...: the alert and its whole timeline, oldest first.

    Args:
        entries: (time, source, what, detail) rows.
        temporal_url: the alert's workflow in the Temporal Web UI, if known.
        temporal_note: why the workflow history is missing, if it is.
    """
    title = f"{alert['compressor_id']} {alert['metric']} {alert['severity']}"
    rows = "".join(
        f"<tr><td>{esc(when(t))}</td><td><span class=src>{esc(src)}</span></td>"
        f"<td>{_tagged(what)}</td><td>{esc(detail)}</td></tr>"
        for t, src, what, detail in sorted(entries, key=lambda e: e[0]))
    ui = (f"<p><a href='{esc(temporal_url)}' target=_blank rel=noopener>Open this alert's "
          f"workflow in the Temporal Web UI</a></p>") if temporal_url else ""
    note = f"<p class=src>{esc(temporal_note)}</p>" if temporal_note else ""
    return page(f"Alert {title}", (
        f"<div class='card {esc(alert['severity'])}'><h1>Alert {esc(title)}</h1>"
        f"{alert_summary(alert)}{ui}</div>"
        f"<div class=card><h2>Timeline</h2><table id=timeline><thead><tr><th>When</th>"
        f"<th>Source</th><th>What</th><th>Details</th></tr></thead><tbody>{rows}</tbody>"
        f"</table>{note}</div>"))


def _tagged(what: str) -> str:
    for status in ("sent", "failed"):
        if what.endswith(f" {status}"):
            return f"{esc(what[: -len(status)])}<span class='tag {status}'>{status}</span>"
    return esc(what)


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
