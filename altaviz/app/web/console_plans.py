"""The console's silences, maintenance windows and failure forecasts (``/console/silences``,
``/console/forecast``).

Creating and expiring a silence goes through the same functions as ``altaviz silence``
(:mod:`altaviz.app.holds`, :func:`altaviz.core.silences.parse_matchers`), so the page accepts
and refuses exactly what the command does, with the same one-line errors. Every read and write
runs in the signed-in person's organization under row-level security: another organization's
silence cannot be seen or expired (it answers "no silence N in organization ..."). Forms that
change something carry a token bound to the session cookie, on top of SameSite=Lax.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from psycopg.rows import dict_row

from altaviz.app.holds import (
    add_silence,
    expire_silence,
    list_silences,
    list_windows,
    parse_duration,
    parse_time,
)
from altaviz.app.web import auth, views
from altaviz.app.web.chart import fmt_value
from altaviz.core.db import connect, queries, tenant
from altaviz.core.errors import InputError
from altaviz.core.messages import metric_unit
from altaviz.core.silences import MaintenanceWindow, Silence, parse_matchers
from rules.store import latest_rule_set

#: Silences over for longer than this are no longer listed (they stay in the database).
EXPIRED_SHOWN = timedelta(days=30)
FORECAST_LIMIT = 100
_DURATION = re.compile(r"^\s*\d+(?:\.\d+)?\s*[mhdw]\s*$")
_PAGE = "/console"
_EMPTY_FORM: dict[str, Any] = {"compressors": "", "sites": "", "rules": "", "severities": [],
                               "start": "now", "until": "2h", "comment": ""}


@dataclass(frozen=True)
class SilenceRow:
    """A silence as the page lists it."""

    silence: Silence
    status: str  # active, pending or expired


@dataclass(frozen=True)
class WindowRow:
    """A maintenance window with its next (or current) stretch, in site time when known."""

    window: MaintenanceWindow
    unit: str
    schedule: str
    next_start: str
    next_end: str
    in_force: bool


def silence_status(s: Silence, now: datetime) -> str:
    """``active`` (holding back now), ``pending`` (starts later) or ``expired``."""
    if s.active_at(now):
        return "active"
    return "pending" if s.starts_at > now else "expired"


def _local(at: datetime, zone: str | None) -> str:
    if zone is None:
        return at.astimezone(UTC).strftime("%a %b %d %H:%M UTC")
    return at.astimezone(ZoneInfo(zone)).strftime("%a %b %d %H:%M ") + zone


def window_row(w: MaintenanceWindow, now: datetime) -> WindowRow | None:
    """The window's next stretch from ``now`` (None when it has none left)."""
    rec = w.recurrence
    zone = rec.timezone if rec else None
    stretches = w.spans((now, now + timedelta(days=400)))
    unit = f"compressor {w.compressor_id}" if w.compressor_id else f"site {w.site_id}"
    if rec is None:
        schedule = "once"
    else:
        nth = {1: "1st", 2: "2nd", 3: "3rd", -1: "last"}.get(rec.nth_of_month or 0,
                                                          f"{rec.nth_of_month}th")
        cadence = (f"every {nth} {rec.weekday} of the month" if rec.nth_of_month
                   else "every " + ("" if rec.every_weeks == 1 else f"{rec.every_weeks} weeks, ")
                   + rec.weekday)
        schedule = f"{cadence} {rec.start}-{rec.end} {rec.timezone}"
    if not stretches:
        return None
    b, f = stretches[0]
    return WindowRow(w, unit, schedule, _local(b, zone), _local(f, zone), b <= now < f)


def page_data(url: str, org_id: str, now: datetime
              ) -> tuple[list[SilenceRow], list[WindowRow], list[str]]:
    """The organization's silences (those over within :data:`EXPIRED_SHOWN` too), its windows
    still to come, and its rule ids (for the form's hints)."""
    with connect(url) as conn:
        silences = list_silences(conn, org_id, now=now, every=True)
        windows = list_windows(conn, org_id, now=now)
        rules = _rule_ids(conn, org_id)
    rows = [SilenceRow(s, silence_status(s, now)) for s in silences
            if s.ends_at > now - EXPIRED_SHOWN]
    order = {"active": 0, "pending": 1, "expired": 2}
    rows.sort(key=lambda r: (order[r.status], -r.silence.ends_at.timestamp()
                             if r.status == "expired" else r.silence.starts_at.timestamp()))
    return rows, [r for w in windows if (r := window_row(w, now)) is not None], rules or []


def _rule_ids(conn: Any, org_id: str) -> list[str] | None:
    rules = latest_rule_set(conn, org_id) or latest_rule_set(conn, None, reader=org_id)
    return sorted(r.id for r in rules.rules) if rules is not None else None


def matcher_specs(compressors: str, sites: str, rules: str,
                  severities: list[str]) -> list[str]:
    """The form's fields as ``altaviz silence add`` matchers (``compressor=A,B`` ...)."""
    specs = [f"{name}={value.strip()}" for name, value in (
        ("compressor", compressors), ("site", sites), ("rule", rules)) if value.strip()]
    if severities:
        specs.append("severity=" + ",".join(severities))
    return specs


def create(url: str, org_id: str, *, specs: list[str], start: str, until: str, comment: str,
           by: str, now: datetime) -> int:
    """Add a silence as ``altaviz silence add`` does.

    Raises:
        InputError: the same one-line errors as the command (bad matcher, unknown rule or
            compressor, end not after start, ...).
    """
    start_at = parse_time(start or "now", now=now)
    if not until.strip():
        raise InputError("give how long (2h, 90m, 3d) or an end time")
    end_at = start_at + parse_duration(until) if _DURATION.match(until) else parse_time(
        until, now=now)
    with connect(url) as conn:
        try:
            matchers = parse_matchers(specs, known_rules=_rule_ids(conn, org_id))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return add_silence(conn, org_id, matchers, starts_at=start_at, ends_at=end_at,
                           created_by=by, comment=comment.strip())


def expire(url: str, org_id: str, silence_id: int, *, by: str, now: datetime) -> datetime:
    """End a silence of the organization now (InputError: not its own, or already over)."""
    with connect(url) as conn:
        return expire_silence(conn, org_id, silence_id, by=by, now=now)


def _span(hours: float) -> str:
    return f"{max(hours, 1.0):.0f} h" if hours < 48 else f"{hours / 24:.1f} days"


def forecasts(url: str, org_id: str, limit: int = FORECAST_LIMIT) -> list[dict[str, Any]]:
    """Units by shortest forecast (``units_by_shortest_forecast``), with the time to the limit
    and the 80% band in words."""
    with connect(url, row_factory=dict_row) as conn, tenant(conn, org_id):
        rows: list[dict[str, Any]] = conn.execute(
            queries("predictions")["units_by_shortest_forecast"], {"limit": limit}).fetchall()
    for r in rows:
        hour = r["hour"]
        low = (r["low_at"] - hour) / timedelta(hours=1)
        r["time_to_limit"] = _span(float(r["hours"]))
        r["band"] = (f"{_span(low)} to {_span((r['high_at'] - hour) / timedelta(hours=1))}"
                     if r["high_at"] is not None else f"at least {_span(low)}")
        r["limit_text"] = f"{fmt_value(float(r['limit_value']))} " \
                          f"{metric_unit(r['metric'])}".strip() + f" ({r['limit_name']})"
    return rows


def add_routes(router: APIRouter, *, database_url: str, sessions: auth.SessionSigner,
               signed_in: Callable[[Request, Callable[[dict[str, Any]], Awaitable[Response]]],
                                   Awaitable[Response]]) -> None:
    """Add the silences and forecast pages to the console's router."""

    async def silences_page(request: Request, user: dict[str, Any], *,
                            error: str | None = None, form: dict[str, Any] | None = None,
                            status: int = 200, done: str | None = None) -> Response:
        now = datetime.now(UTC)
        rows, windows, rules = await asyncio.to_thread(page_data, database_url,
                                                       user["org_id"], now)
        token = sessions.form_token(request.cookies.get(auth.COOKIE, ""))
        return HTMLResponse(views.render(
            "silences.html", user=user, silences=rows, windows=windows, rules=rules,
            token=token, error=error, done=done, form=form or _EMPTY_FORM),
            status_code=status)

    def refused(user: dict[str, Any]) -> Response:
        return HTMLResponse(views.render(
            "not_found.html", user=user, what="form (it expired: reload the page and try "
            "again)"), status_code=403)

    @router.get("/silences", response_class=HTMLResponse)
    async def silences(request: Request, done: str = "", compressor: str = "") -> Response:
        async def page(user: dict[str, Any]) -> Response:
            shown = done if re.fullmatch(r"(created|expired) silence \d{1,12}", done) else None
            form = {**_EMPTY_FORM, "compressors": compressor[:200]}
            return await silences_page(request, user, done=shown, form=form)

        return await signed_in(request, page)

    @router.post("/silences")
    async def silence_add(request: Request, compressors: str = Form(""), sites: str = Form(""),
                          rules: str = Form(""), severity: list[str] = Form([]),  # noqa: B008
                          start: str = Form("now"), until: str = Form(""),
                          comment: str = Form(""), token: str = Form("")) -> Response:
        async def page(user: dict[str, Any]) -> Response:
            if not sessions.form_ok(request.cookies.get(auth.COOKIE), token):
                return refused(user)
            form = {"compressors": compressors, "sites": sites, "rules": rules,
                    "severities": severity, "start": start, "until": until,
                    "comment": comment}
            try:
                sid = await asyncio.to_thread(
                    create, database_url, user["org_id"],
                    specs=matcher_specs(compressors, sites, rules, severity), start=start,
                    until=until, comment=comment, by=user["login"], now=datetime.now(UTC))
            except InputError as exc:
                return await silences_page(request, user, error=str(exc), form=form,
                                           status=400)
            return RedirectResponse(f"{_PAGE}/silences?done=created+silence+{sid}", 303)

        return await signed_in(request, page)

    @router.post("/silences/{silence_id}/expire")
    async def silence_expire(request: Request, silence_id: int,
                             token: str = Form("")) -> Response:
        async def page(user: dict[str, Any]) -> Response:
            if not sessions.form_ok(request.cookies.get(auth.COOKIE), token):
                return refused(user)
            try:
                await asyncio.to_thread(expire, database_url, user["org_id"], silence_id,
                                        by=user["login"], now=datetime.now(UTC))
            except InputError as exc:
                return await silences_page(request, user, error=str(exc), status=404
                                           if "no silence" in str(exc) else 409)
            return RedirectResponse(f"{_PAGE}/silences?done=expired+silence+{silence_id}",
                                    303)

        return await signed_in(request, page)

    @router.get("/forecast", response_class=HTMLResponse)
    async def forecast(request: Request) -> Response:
        async def page(user: dict[str, Any]) -> Response:
            rows = await asyncio.to_thread(forecasts, database_url, user["org_id"])
            return HTMLResponse(views.render("forecast.html", user=user, rows=rows,
                                             limit=FORECAST_LIMIT))

        return await signed_in(request, page)
