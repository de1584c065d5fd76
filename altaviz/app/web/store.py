"""The web server's database reads and writes (synchronous; the app runs them in threads).

Tenant data is read inside :func:`altaviz.core.db.tenant` for the organization named by the verified
link, so a link of one organization can never see or change another's alert: the row simply
is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from altaviz.core.db import admin, connect, queries, tenant
from altaviz.core.forecast_text import load_forecast
from altaviz.core.links import LinkClaims
from altaviz.core.messages import metric_unit


@dataclass(frozen=True)
class LinkView:
    """What a link page needs: the alert, the recipient and whether the token was used."""

    alert: dict[str, Any] | None
    contact: dict[str, Any] | None
    use: dict[str, Any] | None


def link_view(url: str, claims: LinkClaims) -> LinkView:
    """The alert, contact and token use a verified link refers to (None where missing)."""
    q = queries("notify")
    with connect(url, row_factory=dict_row) as conn, tenant(conn, claims.org_id):
        alert = conn.execute(q["alert_for_link"], {"alert_id": claims.alert_id}).fetchone()
        contact = conn.execute(q["contact_by_id"], {"contact_id": claims.contact_id}).fetchone()
        use = conn.execute(q["link_token_use"], {"token_id": claims.token_id}).fetchone()
    return LinkView(alert, contact, use)


def claim_token(url: str, claims: LinkClaims) -> bool:
    """Mark the token as being used; False if another request used (or is using) it."""
    q = queries("notify")
    with connect(url) as conn, tenant(conn, claims.org_id):
        row = conn.execute(q["claim_link_token"], {
            "token_id": claims.token_id, "alert_id": claims.alert_id,
            "contact_id": claims.contact_id, "action": claims.action}).fetchone()
    return row is not None


def finish_token(url: str, claims: LinkClaims, outcome: str, detail: str | None = None) -> None:
    """Record how the use of a claimed token ended (acknowledged, queued or released)."""
    with connect(url) as conn, tenant(conn, claims.org_id):
        conn.execute(queries("notify")["finish_link_token"],
                     {"token_id": claims.token_id, "outcome": outcome, "detail": detail})


@dataclass(frozen=True)
class Timeline:
    """An alert with its events, deliveries and link uses."""

    alert: dict[str, Any] | None
    events: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    link_uses: list[dict[str, Any]]


def timeline(url: str, org_id: str, alert_id: str) -> Timeline:
    """Everything PostgreSQL knows about one alert of one organization."""
    q = queries("notify")
    p = {"alert_id": alert_id}
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        alert = conn.execute(q["alert_for_link"], p).fetchone()
        if alert is None:
            return Timeline(None, [], [], [])
        note = load_forecast(conn, alert["compressor_id"], alert["rule_id"],
                             alert.get("last_breach_hour") or alert["breach_hour"],
                             metric_unit(alert["metric"]))
        alert["forecast"] = note.sentence() if note is not None else None
        return Timeline(alert, conn.execute(q["alert_events_for_alert"], p).fetchall(),
                        conn.execute(q["notifications_for_alert"], p).fetchall(),
                        conn.execute(q["link_uses_for_alert"], p).fetchall())


def ping(url: str) -> None:
    """Raise unless the database answers."""
    with connect(url) as conn:
        conn.execute("SELECT 1")


def inbox_store(url: str, mailbox: str, title: str, body: str, notify_type: str | None) -> int:
    """Keep one message posted to the demo inbox; return its id."""
    with connect(url) as conn, admin(conn):
        row = conn.execute(queries("notify")["inbox_insert"], {
            "mailbox": mailbox, "title": title, "body": body,
            "notify_type": notify_type}).fetchone()
    assert row is not None
    return int(row[0])


def inbox_messages(url: str, mailbox: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The newest demo-inbox messages (optionally of one mailbox)."""
    with connect(url, row_factory=dict_row) as conn, admin(conn):
        return conn.execute(queries("notify")["inbox_list"],
                            {"mailbox": mailbox, "limit": limit}).fetchall()


def as_utc_text(value: datetime | None) -> str:
    """``2024-05-01 14:00 UTC`` (or an empty string)."""
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"
