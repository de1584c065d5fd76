"""The supervisor console: sign-in, the organization's alerts, an alert, a compressor and the
data-quality summary, as server-rendered pages under ``/console``.

A person signs in with the login and password an operator created (``altaviz users add``);
the session is a signed cookie (Secure unless the server is only reached over plain HTTP on
a loopback address, HttpOnly, SameSite=Lax) that every request checks against the database.
Every read runs in the person's organization under row-level security, so another
organization's alert or compressor answers 404, the same as one that does not exist.
Failed sign-ins are rate-limited per login and per client address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from altaviz.app.web import auth, console_plans, console_store, sign_in_link, views
from altaviz.app.web.console_store import Filters

PERIODS = ((24, "24 hours"), (24 * 7, "7 days"), (24 * 30, "30 days"))
LIST_LIMIT = 200
_PAGE = "/console"


def _safe_next(target: str | None) -> str:
    """Only a console path of this server: never an absolute URL an attacker supplied."""
    if target and target.startswith(f"{_PAGE}/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return f"{_PAGE}/alerts"


def _opt(value: str | None) -> str | None:
    return value.strip() or None if value else None


def console_router(*, database_url: str, sessions: auth.SessionSigner,
                   login_limit: auth.RateLimiter | None = None,
                   address_limit: auth.RateLimiter | None = None, secure_cookies: bool = True,
                   temporal_url: Callable[[dict[str, Any]], str | None] = lambda _a: None,
                   public_url: str | None = None) -> APIRouter:
    """The console's routes.

    Args:
        database_url: the runtime login's PostgreSQL URL.
        sessions: signs and verifies session cookies.
        login_limit: failed sign-ins allowed per login (default 5 in 15 min).
        address_limit: failed sign-ins allowed per client address (default 20 in 15 min: a
            site's people may share one address).
        secure_cookies: mark the session cookie Secure (browsers then send it over HTTPS
            only); off only for a server reached over plain HTTP on a loopback address.
        temporal_url: the alert's workflow in the Temporal Web UI, for its page.
        public_url: the server's configured public URL, which one-time sign-in links point
            to (never the request's Host header); without it no link is sent.
    """
    router = APIRouter(prefix=_PAGE)
    per_login = login_limit or auth.RateLimiter(limit=5)
    per_address = address_limit or auth.RateLimiter(limit=20)

    def html(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

    async def current_user(request: Request) -> dict[str, Any] | None:
        session = sessions.verify(request.cookies.get(auth.COOKIE))
        if session is None:
            return None
        user = await asyncio.to_thread(console_store.session_user, database_url,
                                       session.org_id, session.login)
        if user is None or user["session_epoch"] != session.epoch:
            return None
        return user

    def to_sign_in(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{_PAGE}/sign-in?next={quote(target, safe='')}", 303)

    def not_found(user: dict[str, Any], what: str) -> HTMLResponse:
        return html(views.render("not_found.html", user=user, what=what), 404)

    async def signed_in(request: Request,
                        page: Callable[[dict[str, Any]], Awaitable[Response]]) -> Response:
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        return await page(user)

    @router.get("", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{_PAGE}/alerts", 303)

    @router.get("/sign-in", response_class=HTMLResponse)
    async def sign_in_form(next: str = "") -> HTMLResponse:
        return html(views.render("sign_in.html", next=_safe_next(next), login="", error=None))

    @router.post("/sign-in")
    async def sign_in(request: Request, login: str = Form(""), password: str = Form(""),
                      next: str = Form("")) -> Response:
        login = login.strip().lower()
        client = request.client.host if request.client else "unknown"
        wait = max(per_login.retry_after(login), per_address.retry_after(client))
        if wait:
            return html(views.render(
                "sign_in.html", next=_safe_next(next), login=login,
                error=f"Too many failed sign-ins. Try again in {max(1, wait // 60)} min."), 429)
        row = await asyncio.to_thread(console_store.sign_in_lookup, database_url, login) \
            if login else None
        ok = await asyncio.to_thread(auth.check_password,
                                     row["password_hash"] if row else None, password)
        if row is None or not ok:
            per_login.failed(login)
            per_address.failed(client)
            return html(views.render("sign_in.html", next=_safe_next(next), login=login,
                                     error="Wrong login or password."), 401)
        per_login.succeeded(login)
        new_hash = auth.hash_password(password) if auth.needs_rehash(
            row["password_hash"]) and len(password) >= auth.MIN_PASSWORD else None
        await asyncio.to_thread(console_store.record_sign_in, database_url, row["org_id"],
                                login, new_hash)
        return start_session(_safe_next(next), auth.Session(row["org_id"], login,
                                                            row["session_epoch"]))

    def start_session(target: str, session: auth.Session) -> Response:
        response = RedirectResponse(target, 303)
        response.set_cookie(
            auth.COOKIE, sessions.issue(session), max_age=sessions.max_age, path=_PAGE,
            secure=secure_cookies, httponly=True, samesite="lax")
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        session = sessions.verify(request.cookies.get(auth.COOKIE))
        if session is not None:
            await asyncio.to_thread(console_store.end_sessions, database_url, session.org_id,
                                    session.login)
        response = RedirectResponse(f"{_PAGE}/sign-in", 303)
        response.delete_cookie(auth.COOKIE, path=_PAGE, secure=secure_cookies, httponly=True,
                               samesite="lax")
        return response

    @router.get("/alerts", response_class=HTMLResponse)
    async def alerts(request: Request, severity: str = "", state: str = "active",
                     site: str = "", compressor: str = "", rule: str = "",
                     since: str = "") -> Response:
        state_f = None if state == "all" else (_opt(state) or "active")
        f = Filters(severity=_opt(severity) if severity in console_store.SEVERITIES else None,
                    state=state_f if state_f in (*console_store.STATES, "active") else None,
                    site=_opt(site), compressor=_opt(compressor), rule=_opt(rule),
                    since_hours=int(since) if since.isdigit() else None)

        async def page(user: dict[str, Any]) -> Response:
            rows, counts, choices = await asyncio.to_thread(
                console_store.alert_list, database_url, user["org_id"], f, LIST_LIMIT)
            chips: list[tuple[str, int]] = []
            for st in console_store.STATES:
                n = sum(v for (s, _), v in counts.items() if s == st)
                if n:
                    chips.append((views.STATE_WORDS[st], n))
            for sev in console_store.SEVERITIES:
                n = sum(v for (s, sv), v in counts.items() if sv == sev and s != "resolved")
                chips.append((f"{sev} not resolved", n))
            return html(views.render(
                "alerts.html", user=user, alerts=rows, f=f, choices=choices,
                count_chips=chips, severities=console_store.SEVERITIES,
                states=(*console_store.STATES, "active"), periods=PERIODS, limit=LIST_LIMIT))

        return await signed_in(request, page)

    @router.get("/alerts/{alert_id:path}", response_class=HTMLResponse)
    async def alert(request: Request, alert_id: str) -> Response:
        async def page(user: dict[str, Any]) -> Response:
            detail = await asyncio.to_thread(console_store.alert_detail, database_url,
                                             user["org_id"], alert_id)
            if detail is None:
                return not_found(user, "alert")
            return html(views.alert_page(detail, temporal_url=temporal_url(detail.alert),
                                         user=user))

        return await signed_in(request, page)

    @router.get("/compressors/{compressor_id}", response_class=HTMLResponse)
    async def compressor(request: Request, compressor_id: str) -> Response:
        async def page(user: dict[str, Any]) -> Response:
            detail = await asyncio.to_thread(console_store.compressor_detail, database_url,
                                             user["org_id"], compressor_id)
            if detail is None:
                return not_found(user, "compressor")
            charts = [(s, views.chart_svg(s)) for s in detail.charts]
            return html(views.render(
                "compressor.html", user=user, c=detail.compressor, charts=charts,
                quality=detail.quality,
                open_alerts=[a for a in detail.alerts if a["state"] != "resolved"],
                past_alerts=[a for a in detail.alerts if a["state"] == "resolved"]))

        return await signed_in(request, page)

    @router.get("/quality", response_class=HTMLResponse)
    async def quality(request: Request) -> Response:
        async def page(user: dict[str, Any]) -> Response:
            by_check, failures = await asyncio.to_thread(console_store.quality_summary,
                                                         database_url, user["org_id"])
            return html(views.render("quality.html", user=user, by_check=by_check,
                                     failures=failures))

        return await signed_in(request, page)

    console_plans.add_routes(router, database_url=database_url, sessions=sessions,
                             signed_in=signed_in)
    sign_in_link.add_routes(router, database_url=database_url, public_url=public_url,
                            start_session=start_session, login_limit=auth.RateLimiter(limit=5),
                            address_limit=auth.RateLimiter(limit=20),
                            tokens=sign_in_link.LinkTokens(sessions.link_key))
    return router
