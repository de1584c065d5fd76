"""The console's database reads (synchronous; the app runs them in threads).

Every read but :func:`sign_in_lookup` runs inside :func:`altaviz.core.db.tenant` for the
signed-in person's organization: another organization's alert, compressor or check is not
found, exactly as if it did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from altaviz.core.db import connect, queries, tenant
from altaviz.core.forecast_text import load_forecast
from altaviz.core.messages import metric_unit

CHART_HOURS = 72
#: Charted on a compressor's page, besides the metrics of its open alerts.
KEY_METRICS = ("vibration_frame_mm_s", "bearing_temp_max_f", "discharge_temp_max_f",
               "oil_pressure_psig", "speed_rpm")
STATES = ("open", "acknowledged", "cleared_unacknowledged", "resolved")
SEVERITIES = ("critical", "warning")


def _q(name: str) -> str:
    return queries("console")[name]


@dataclass(frozen=True)
class Filters:
    """The alert list's filters; None means "any"."""

    severity: str | None = None
    state: str | None = "active"
    site: str | None = None
    compressor: str | None = None
    rule: str | None = None
    since_hours: int | None = None

    def params(self, now: datetime) -> dict[str, Any]:
        since = now - timedelta(hours=self.since_hours) if self.since_hours else None
        return {"severity": self.severity, "state": self.state, "site": self.site,
                "compressor": self.compressor, "rule": self.rule, "since": since}


@dataclass(frozen=True)
class Series:
    """One chart's data: hourly means of a metric in a window, with its limits."""

    metric: str
    points: list[tuple[datetime, float | None]]
    start: datetime
    end: datetime
    warning: float | None = None
    critical: float | None = None


@dataclass(frozen=True)
class AlertDetail:
    """Everything the alert page shows."""

    alert: dict[str, Any]
    events: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    link_uses: list[dict[str, Any]]
    series: Series
    #: display names by contact id of everyone the alert's records name
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CompressorDetail:
    """Everything the compressor page shows."""

    compressor: dict[str, Any]
    alerts: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    charts: list[Series] = field(default_factory=list)


def sign_in_lookup(url: str, login: str) -> dict[str, Any] | None:
    """The active console user with this login (any organization), with the password hash."""
    with connect(url, row_factory=dict_row) as conn, conn.transaction():
        row: dict[str, Any] | None = conn.execute(_q("sign_in_lookup"),
                                                  {"login": login}).fetchone()
        return row


def session_user(url: str, org_id: str, login: str) -> dict[str, Any] | None:
    """The signed-in person (None if deactivated or gone), with the organization's name."""
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        user: dict[str, Any] | None = conn.execute(_q("session_user"),
                                                   {"login": login}).fetchone()
        if user is not None:
            org = conn.execute(_q("organization_name")).fetchone()
            user["org_name"] = org["name"] if org else org_id
        return user


def record_sign_in(url: str, org_id: str, login: str, new_hash: str | None = None) -> None:
    """Note the sign-in time (and store a stronger hash of the password, if one was made)."""
    with connect(url) as conn, tenant(conn, org_id):
        conn.execute(_q("record_sign_in"), {"login": login})
        if new_hash:
            conn.execute(_q("rehash_password"), {"login": login, "password_hash": new_hash})


def end_sessions(url: str, org_id: str, login: str) -> None:
    """Sign the person out everywhere (every cookie issued so far stops working)."""
    with connect(url) as conn, tenant(conn, org_id):
        conn.execute(_q("end_sessions"), {"login": login})


def upsert_user(conn: psycopg.Connection[Any], org_id: str, login: str, name: str,
                password_hash: str) -> bool:
    """Create the console user, or reset their name and password; True if created."""
    with tenant(conn, org_id):
        row = conn.execute(_q("upsert_user"), {"login": login, "name": name,
                                               "password_hash": password_hash}).fetchone()
    return bool(row and row[0])


def alert_list(url: str, org_id: str, filters: Filters, limit: int = 200
               ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], int],
                          dict[str, list[tuple[str, str]]]]:
    """The filtered alerts, counts by (state, severity) and the filter choices."""
    p = filters.params(datetime.now(UTC))
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        rows = conn.execute(_q("alerts"), {**p, "limit": limit}).fetchall()
        counts = {(r["state"], r["severity"]): int(r["n"])
                  for r in conn.execute(_q("alert_counts"), p).fetchall()}
        choices: dict[str, list[tuple[str, str]]] = {"site": [], "compressor": [], "rule": []}
        for r in conn.execute(_q("filter_choices")).fetchall():
            choices[r["kind"]].append((r["value"], r["label"]))
    return rows, counts, choices


def _limits(definition: Any) -> tuple[float | None, float | None]:
    if not isinstance(definition, dict):
        return None, None
    out: list[float | None] = []
    for key in ("warning", "critical"):
        v = definition.get(key)
        out.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None)
    return out[0], out[1]


def _series(conn: psycopg.Connection[Any], compressor_id: str, metric: str, start: datetime,
            end: datetime, warning: float | None, critical: float | None) -> Series:
    rows = conn.execute(_q("hourly_means"), {"compressor_id": compressor_id, "metric": metric,
                                             "start": start, "end": end}).fetchall()
    return Series(metric, [(r["hour"], r["mean"]) for r in rows], start, end, warning, critical)


def alert_window(breach_hour: datetime, latest: datetime | None,
                 acknowledged_at: datetime | None = None) -> tuple[datetime, datetime]:
    """The chart's 72 hours: up to the newest data (or the acknowledgement, if later and
    within 48 h of the breach), but always with the breach hour in view (at most 48 h after
    it, so the hours before the breach show too)."""
    cap = breach_hour + timedelta(hours=48)
    ack = acknowledged_at if acknowledged_at is not None and acknowledged_at <= cap else None
    last = max([t for t in (latest, ack) if t is not None], default=breach_hour)
    end = max(breach_hour, min(last, cap))
    return end - timedelta(hours=CHART_HOURS), end


def alert_detail(url: str, org_id: str, alert_id: str) -> AlertDetail | None:
    """The alert with its timeline rows and chart, or None if not of this organization."""
    n = queries("notify")
    p = {"alert_id": alert_id}
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        alert = conn.execute(n["alert_for_link"], p).fetchone()
        if alert is None:
            return None
        rule_set = conn.execute(_q("alert_rule_set"), p).fetchone()
        rule = conn.execute(_q("rule_limits"), {
            "rule_id": alert["rule_id"],
            "rule_set_id": rule_set["rule_set_id"] if rule_set else None}).fetchone()
        definition = rule["definition"] if rule and isinstance(rule["definition"], dict) else {}
        kind = definition.get("kind")
        alert["rule_kind"] = kind
        # Only a threshold rule's limits are levels of the charted mean (a rate-of-change
        # limit is per hour, a no-data limit is hours without data).
        warning, critical = _limits(definition) if kind == "threshold" else (None, None)
        if kind is None and alert.get("threshold") is not None:
            # an escalated alert keeps the warning threshold it opened on
            if alert["severity"] == "critical" and alert.get("escalated_at") is None:
                critical = float(alert["threshold"])
            else:
                warning = float(alert["threshold"])
        latest = conn.execute(_q("latest_hour"), {
            "compressor_id": alert["compressor_id"], "until": datetime.now(UTC)}).fetchone()
        start, end = alert_window(alert["breach_hour"], latest["max"] if latest else None,
                                  alert.get("acknowledged_at"))
        series = _series(conn, alert["compressor_id"], alert["metric"], start, end, warning,
                         critical)
        note = load_forecast(conn, alert["compressor_id"], alert["rule_id"],
                             alert.get("last_breach_hour") or alert["breach_hour"],
                             metric_unit(alert["metric"]))
        alert["forecast"] = note.sentence() if note is not None else None
        events = conn.execute(n["alert_events_for_alert"], p).fetchall()
        ids = sorted({e["actor"] for e in events if e["actor"]}
                     | {alert[k] for k in ("acknowledged_by", "resolved_by") if alert.get(k)})
        names = {r["contact_id"]: r["name"]
                 for r in conn.execute(_q("contact_names"), {"ids": ids}).fetchall()}
        return AlertDetail(alert, events, conn.execute(n["notifications_for_alert"], p).fetchall(),
                           conn.execute(n["link_uses_for_alert"], p).fetchall(), series, names)


def compressor_detail(url: str, org_id: str, compressor_id: str) -> CompressorDetail | None:
    """The compressor with its alerts, data-quality checks and key-metric charts."""
    p = {"compressor_id": compressor_id}
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        comp = conn.execute(_q("compressor"), p).fetchone()
        if comp is None:
            return None
        # the alert list's query, filtered to this compressor alone
        alerts = conn.execute(_q("alerts"), {
            "severity": None, "state": None, "site": None, "compressor": compressor_id,
            "rule": None, "since": None, "limit": 100}).fetchall()
        quality = conn.execute(_q("compressor_quality"), p).fetchall()
        metrics = list(dict.fromkeys([a["metric"] for a in alerts if a["state"] != "resolved"]
                                     + list(KEY_METRICS)))
        limits: dict[str, tuple[float | None, float | None]] = {}
        for r in conn.execute(_q("metric_rules"), {"metrics": metrics}).fetchall():
            if not isinstance(r["definition"], dict) or r["definition"].get("kind") != \
                    "threshold":
                continue
            w, c = _limits(r["definition"])
            if (w, c) != (None, None) and r["metric"] not in limits:
                limits[r["metric"]] = (w, c)
        latest = conn.execute(_q("latest_hour"), {**p, "until": datetime.now(UTC)}).fetchone()
        end = latest["max"] if latest and latest["max"] else None
        charts: list[Series] = []
        if end is not None:
            start = end - timedelta(hours=CHART_HOURS)
            for m in metrics:
                s = _series(conn, compressor_id, m, start, end, *limits.get(m, (None, None)))
                if s.points:
                    charts.append(s)
    return CompressorDetail(comp, alerts, quality, charts)


def quality_summary(url: str, org_id: str
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The latest data-quality check of each unit, summarised by check, and the failures."""
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        return (conn.execute(_q("quality_by_check")).fetchall(),
                conn.execute(_q("quality_failures")).fetchall())
