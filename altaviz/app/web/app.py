"""The acknowledgement server: one-tap ack links, alert history pages, health and demo inbox.

Routes:

* ``GET /ack/{token}``: the alert and a confirm button. Changes nothing, because mail scanners
  and chat link previews open links by themselves.
* ``GET /a/{org_id}/{code}`` and ``POST``: the same for the short link messages carry; the
  code's claims are read from ``short_links`` and its signature checked against them. A short
  history link (action "view") redirects to the alert page. With
  PostgreSQL unreachable a short link cannot be read: the page says to try again.
* ``POST /ack/{token}``: acknowledges through the alert workflow's ``acknowledge`` update. If no
  worker answers within ``ack_timeout`` seconds, the same request goes to the workflow as the
  ``ack_requested`` signal (Temporal accepts signals without a worker and keeps them in the
  workflow's history), the token is recorded as ``queued``, and the page says it takes effect
  when a worker is back: an acknowledgement is never lost.
* ``GET /alerts/{alert_id}?token=...``: read-only alert page (signed "view" link): the metric's
  last 72 h as an inline SVG chart and the timeline in domain terms from ``alert_events``,
  ``notifications`` and link uses; the raw workflow events are one link away, in the Temporal
  Web UI.
* ``/console/...``: the supervisor console (:mod:`altaviz.app.web.console`).
* ``GET /healthz``: 200 when PostgreSQL and Temporal answer, else 503.
* ``POST /inbox/receive[/{mailbox}]`` and ``GET /inbox``: the demo's local receiver (only with
  ``inbox=True``): point a contact's Apprise URL at
  ``json://HOST:PORT/inbox/receive/<mailbox>`` and read the messages, links clickable, at
  ``/inbox``.

Every bad link (malformed, forged or altered, expired, already used, wrong action, for an alert
of another organization, for a resolved alert, of a deactivated contact) gets an HTML page that
says what is wrong, with a 4xx status, and changes nothing. The server never logs tokens, the
link secret or the database URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from altaviz.app.metrics import metrics_app
from altaviz.app.web import auth, console_store, pages, store, views
from altaviz.app.web.console import console_router
from altaviz.core.errors import ServiceError
from altaviz.core.links import (
    Action,
    LinkClaims,
    LinkError,
    LinkSigner,
    load_secret,
    signer_from_settings,
)
from altaviz.core.payloads import AckRequest, AlertState
from workflows.alert import QUERY_STATE, workflow_id_of

log = logging.getLogger(__name__)

ACK_UPDATE = "acknowledge"
#: What reading PostgreSQL raises when it cannot be reached (refused, or lost mid-request).
DATABASE_DOWN = (ServiceError, psycopg.OperationalError)
ACK_SIGNAL = "ack_requested"
_STATUS = {"malformed": 400, "forged": 403, "expired": 410, "wrong_action": 403,
           "wrong_alert": 403}
_TITLES = {"malformed": "Broken link", "forged": "Invalid link", "expired": "Link expired",
           "wrong_action": "Wrong kind of link", "wrong_alert": "Link does not match"}
_MAILBOX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
_TOKEN_IN_TEXT = re.compile(r"(/ack/|/a/[A-Za-z0-9_-]+/|/sign-in/link/|token=)[A-Za-z0-9_.%=-]+")


class RedactTokens(logging.Filter):
    """Replaces link tokens in log records (e.g. uvicorn's access log) with ``***``.

    A token is a bearer credential for one acknowledgement; access logs are read by more people
    than should hold one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_TOKEN_IN_TEXT.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in (record.args if isinstance(record.args, tuple)
                                          else (record.args,)))
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_TEXT.sub(r"\1***", record.msg)
        return True


#: Sent with every response (:class:`SecurityHeaders`). The pages have no script, one inline
#: style sheet (allowed by hash) and one form posting to this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src {pages.STYLE_SRC}; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware putting :data:`SECURITY_HEADERS` on every response, errors included.

    Pages carry bearer tokens in their URLs: a response without the policy (a JSON error, a
    404, a crash) must not be the one a browser frames, caches or leaks by referrer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_secured)
        except Exception:
            # Starlette's own 500 response is sent outside this middleware: send it here.
            if not started:
                await HTMLResponse(pages.page("Server error", "<h1>Server error</h1><p>The "
                                              "server could not answer. Try again in a minute."
                                              "</p>"), 500)(scope, receive, send_secured)
            raise


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status)


def _rpc_problem(exc: RPCError) -> HTMLResponse | None:
    """The page for an acknowledge update Temporal refused: 410 when the workflow has finished,
    503 for any other refusal, None when it only timed out (the caller then queues the signal,
    which is applied once)."""
    if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
        return _problem(410, "Alert closed", "This alert's workflow has finished: "
                        "there is nothing left to acknowledge.")
    if exc.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return _problem(503, "Try again in a minute", "The alert service could not "
                        "take the acknowledgement right now; nothing was recorded.")
    return None


def _problem(status: int, title: str, message: str, hint: str = "") -> HTMLResponse:
    return _html(pages.problem_page(title, message, hint), status)


def _link_problem(exc: LinkError) -> HTMLResponse:
    hint = {"expired": "Acknowledge with `altaviz alerts ack` or ask your supervisor.",
            "forged": "Use the link exactly as it arrived in your message."}.get(exc.problem, "")
    return _problem(_STATUS[exc.problem], _TITLES[exc.problem], str(exc), hint)


def create_app(*, database_url: str, signer: LinkSigner,
               temporal: Callable[[], Awaitable[Client]],
               temporal_ui_url: str | None = None, namespace: str = "default",
               inbox: bool = False, ack_timeout: float = 5.0,
               public_url: str | None = None,
               session_secret: bytes | None = None, secure_cookies: bool = True) -> FastAPI:
    """The ASGI application.

    Args:
        database_url: PostgreSQL URL (never logged or shown).
        signer: verifies links (the same secret the notify activity signs with).
        temporal: returns a connected client with the pydantic data converter, e.g.
            :meth:`altaviz.app.context.App.temporal_client`; called in the server's event loop at
            start-up, and again later if Temporal was unreachable then.
        temporal_ui_url: base URL of the Temporal Web UI, for links from alert pages.
        namespace: the Temporal namespace of the alert workflows.
        inbox: serve the demo inbox (``/inbox``, ``/inbox/receive``). Off outside demos: it
            stores whatever is posted to it.
        ack_timeout: seconds to wait for a worker to answer the ``acknowledge`` update before
            falling back to the durable ``ack_requested`` signal.
        public_url: the server's configured public URL (``ALTAVIZ_PUBLIC_URL``): a page asked
            for with a trailing slash is redirected there, never to the request's Host header
            (which the client chooses); without it the redirect is a relative path.
        session_secret: key material of the console's session cookies (a random key when
            None: sessions then end when the server restarts).
        secure_cookies: mark session cookies Secure (see :mod:`altaviz.app.web.console`).
    """
    client_lock = asyncio.Lock()
    state: dict[str, Client | None] = {"client": None}

    async def get_client() -> Client | None:
        if state["client"] is not None:
            return state["client"]
        async with client_lock:
            if state["client"] is None:
                try:
                    state["client"] = await asyncio.wait_for(temporal(), timeout=5)
                except Exception as exc:  # reported by /healthz; links still verify
                    log.warning("Temporal is not reachable: %s", type(exc).__name__)
            return state["client"]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await get_client()
        yield

    # Starlette's own trailing-slash redirects build their Location from the request's Host
    # header, which a client chooses (and the URL holds a token): off, and done below from
    # the configured public URL instead.
    app = FastAPI(title="Altaviz", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, redirect_slashes=False)
    app.add_middleware(SecurityHeaders)
    base = (public_url or "").rstrip("/")

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path != "/" and path.endswith("/"):
            target = path.rstrip("/")
            scope = {"type": "http", "path": target, "root_path": "",
                     "method": request.method}
            if any(r.matches(scope)[0] == Match.FULL for r in app.router.routes):
                query = f"?{request.url.query}" if request.url.query else ""
                return RedirectResponse(f"{base}{target}{query}", status_code=308)
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    app.include_router(console_router(
        database_url=database_url, secure_cookies=secure_cookies,
        sessions=auth.SessionSigner(session_secret or secrets.token_bytes(32)),
        temporal_url=lambda alert: views.temporal_link(temporal_ui_url, namespace, alert),
        public_url=public_url))

    def verify(token: str, action: str) -> LinkClaims:
        return signer.verify(token, action=action)  # type: ignore[arg-type]

    # --- acknowledgement links ------------------------------------------------------------

    async def load(claims: LinkClaims) -> store.LinkView | HTMLResponse:
        view = await asyncio.to_thread(store.link_view, database_url, claims)
        if view.alert is None:
            return _problem(404, "Alert not found", "This link does not match any alert of "
                            "your organization.")
        if view.contact is None or not view.contact["active"]:
            return _problem(403, "Link no longer valid", "This link was issued to a contact "
                            "who is no longer on the notification list.")
        if view.use is not None and view.use["outcome"] != "released":
            done = "queued for the alert workflow" if view.use["outcome"] == "queued" else \
                "used"
            return _problem(409, "Link already used", f"This link was already {done} on "
                            f"{pages.when(view.use['used_at'])}. Each link works once.")
        if view.alert["state"] == "resolved":
            return _problem(410, "Alert already resolved", "This alert was resolved on "
                            f"{pages.when(view.alert['resolved_at'])}: there is nothing left "
                            "to acknowledge.")
        if view.alert["ack_state"] == "acknowledged":
            return _problem(409, "Already acknowledged", "This alert was acknowledged by "
                            f"{view.alert['acknowledged_by']} on "
                            f"{pages.when(view.alert['acknowledged_at'])}.")
        return view

    @app.get("/ack/{token}", response_class=HTMLResponse)
    async def ack_form(token: str) -> HTMLResponse:
        try:
            claims = verify(token, "ack")
        except LinkError as exc:
            return _link_problem(exc)
        return await confirm_form(claims, f"/ack/{token}")

    @app.post("/ack/{token}", response_class=HTMLResponse)
    async def ack_confirm(token: str) -> HTMLResponse:
        try:
            claims = verify(token, "ack")
        except LinkError as exc:
            return _link_problem(exc)
        return await confirm(claims)

    async def short_claims(org_id: str, code: str, *, view: bool = False
                           ) -> LinkClaims | HTMLResponse:
        try:
            record = await asyncio.to_thread(store.short_link, database_url, org_id, code)
            action: Action = "view" if view and record is not None \
                and record.action == "view" else "ack"
            return signer.verify_short(org_id, code, record, action=action)
        except LinkError as exc:
            return _link_problem(exc)
        except DATABASE_DOWN:
            return _problem(503, "Try again in a minute", "This link cannot be read right now "
                            "(the database is not reachable).", "Acknowledge with `altaviz "
                            "alerts ack` if it is urgent.")

    @app.get("/a/{org_id}/{code}", response_class=HTMLResponse)
    async def short_ack_form(org_id: str, code: str) -> Response:
        claims = await short_claims(org_id, code, view=True)
        if isinstance(claims, HTMLResponse):
            return claims
        if claims.action == "view":
            # a short history link opens the alert page under a long view token that
            # expires when the short link does
            token = signer.issue(org_id=claims.org_id, alert_id=claims.alert_id,
                                 contact_id=claims.contact_id, action="view",
                                 ttl=claims.expires_at - datetime.now(UTC))
            return RedirectResponse(f"{base}/alerts/{quote(claims.alert_id, safe='')}"
                                    f"?token={token}", status_code=303)
        return await confirm_form(claims, f"/a/{quote(org_id, safe='')}/{code}")

    @app.post("/a/{org_id}/{code}", response_class=HTMLResponse)
    async def short_ack_confirm(org_id: str, code: str) -> HTMLResponse:
        claims = await short_claims(org_id, code)
        if isinstance(claims, HTMLResponse):
            return claims
        return await confirm(claims)

    async def confirm_form(claims: LinkClaims, action_path: str) -> HTMLResponse:
        try:
            view = await load(claims)
        except DATABASE_DOWN:
            return await confirm_offline(claims, action_path)
        if isinstance(view, HTMLResponse):
            return view
        assert view.alert is not None and view.contact is not None
        detail = await asyncio.to_thread(console_store.alert_detail, database_url,
                                         claims.org_id, claims.alert_id)
        if detail is None:
            return _problem(404, "Alert not found", "This link does not match any alert of "
                            "your organization.")
        return _html(views.alert_page(detail, temporal_url=None, ack_action=action_path,
                                      contact_name=view.contact["name"]))

    async def confirm(claims: LinkClaims) -> HTMLResponse:
        try:
            view = await load(claims)
            if isinstance(view, HTMLResponse):
                return view
            assert view.alert is not None
            claimed = await asyncio.to_thread(store.claim_token, database_url, claims)
        except DATABASE_DOWN:
            return await acknowledge_offline(claims)
        if not claimed:
            return _problem(409, "Link already used", "This link has just been used. Each "
                            "link works once.")
        try:
            assert view.contact is not None
            return await acknowledge(claims, view.alert, view.contact["name"])
        except BaseException:
            # Whatever went wrong, the acknowledgement did not happen: free the link.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.finish_token, database_url, claims, "released",
                                        "server error")
            raise

    async def send_ack(handle: Any, req: AckRequest, claims: LinkClaims) -> AlertState:
        """The acknowledge update, bounded by ``ack_timeout`` (the link's request id makes a
        retried tap act once)."""
        return await asyncio.wait_for(
            handle.execute_update(ACK_UPDATE, req, id=claims.request_id,
                                  result_type=AlertState,
                                  rpc_timeout=timedelta(seconds=ack_timeout)),
            timeout=ack_timeout + 1)

    async def acknowledge(claims: LinkClaims, alert: dict[str, Any], who: str
                          ) -> HTMLResponse:
        req = AckRequest(org_id=claims.org_id, by=claims.contact_id, channel="link",
                         request_id=claims.request_id, requested_at=datetime.now(UTC),
                         alert_id=claims.alert_id)
        client = await get_client()
        if client is None:
            await asyncio.to_thread(store.finish_token, database_url, claims, "released",
                                    "temporal unreachable")
            return _problem(503, "Try again in a minute", "The alert service cannot be reached "
                            "right now, so the acknowledgement was not recorded.")
        handle = client.get_workflow_handle(alert["workflow_id"])
        try:
            state = await send_ack(handle, req, claims)
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause) if exc.cause else str(exc)
            await asyncio.to_thread(store.finish_token, database_url, claims, "released",
                                    reason[:500])
            return _problem(409, "Not acknowledged", f"The alert refused the acknowledgement: "
                            f"{reason}")
        except RPCError as exc:
            await asyncio.to_thread(store.finish_token, database_url, claims, "released",
                                    exc.status.name)
            problem = _rpc_problem(exc)
            if problem is not None:
                return problem
            return await queue_signal(handle, claims, alert, req)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            return await queue_signal(handle, claims, alert, req)
        if (state.acknowledged_by, state.ack_channel) != (req.by, req.channel):
            # Another acknowledgement was applied first (both passed the check before either
            # was applied): this one changed nothing, and the page must say so.
            first = f"{state.acknowledged_by} on {pages.when(state.acknowledged_at)}"
            await asyncio.to_thread(store.finish_token, database_url, claims, "released",
                                    f"already acknowledged by {first}"[:500])
            return _problem(409, "Already acknowledged", "This alert was acknowledged by "
                            f"{first}, just before you: your acknowledgement changed nothing.")
        await asyncio.to_thread(store.finish_token, database_url, claims, "acknowledged")
        done = dict(alert, ack_state="acknowledged", state="acknowledged",
                    acknowledged_by=who, acknowledged_at=datetime.now(UTC),
                    ack_channel="link")
        return _html(pages.result_page(
            "Acknowledged", f"Thank you: {alert['compressor_id']} is acknowledged and the "
            "escalation is stopped.", done, ok=True))

    # PostgreSQL down: the signed link names the alert (and so its workflow) and the workflow
    # decides; the update's id, the link's request id, keeps one link from acting twice.

    async def confirm_offline(claims: LinkClaims, action_path: str) -> HTMLResponse:
        client = await get_client()
        try:
            if client is None:
                raise RuntimeError("Temporal unreachable")
            handle = client.get_workflow_handle(workflow_id_of(claims.alert_id))
            state = await asyncio.wait_for(handle.query(QUERY_STATE, result_type=AlertState),
                                           timeout=ack_timeout + 1)
        except Exception:
            return _problem(503, "Try again in a minute", "The alert service cannot be reached "
                            "right now.")
        if state.alert_id != claims.alert_id or state.org_id != claims.org_id:
            return _problem(410, "Alert closed", "This alert is no longer open.")
        return _html(pages.confirm_page(state.model_dump(), claims.contact_id, action_path))

    async def acknowledge_offline(claims: LinkClaims) -> HTMLResponse:
        req = AckRequest(org_id=claims.org_id, by=claims.contact_id, channel="link",
                         request_id=claims.request_id, requested_at=datetime.now(UTC),
                         alert_id=claims.alert_id)
        client = await get_client()
        if client is None:
            return _problem(503, "Try again in a minute", "The alert service cannot be reached "
                            "right now, so the acknowledgement was not recorded.")
        handle = client.get_workflow_handle(workflow_id_of(claims.alert_id))
        state: AlertState | None = None
        try:
            state = await send_ack(handle, req, claims)
        except WorkflowUpdateFailedError as exc:
            return _problem(409, "Not acknowledged", "The alert refused the acknowledgement: "
                            f"{exc.cause or exc}")
        except RPCError as exc:
            problem = _rpc_problem(exc)
            if problem is not None:
                return problem
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            pass
        if state is None:
            try:
                await handle.signal(ACK_SIGNAL, req, rpc_timeout=timedelta(seconds=ack_timeout))
            except RPCError:
                return _problem(503, "Try again in a minute", "The alert service could not "
                                "take the acknowledgement right now; nothing was recorded.")
            return _html(pages.result_page(
                "Acknowledgement recorded", "Your acknowledgement is recorded and takes "
                "effect as soon as the alert service can apply it. You do not need to do "
                "anything else.", None, ok=True), 202)
        if (state.acknowledged_by, state.ack_channel) != (req.by, req.channel):
            return _problem(409, "Already acknowledged", "This alert was acknowledged by "
                            f"{state.acknowledged_by} on {pages.when(state.acknowledged_at)}.")
        return _html(pages.result_page(
            "Acknowledged", f"Thank you: {state.compressor_id} is acknowledged and the "
            "escalation is stopped.", state.model_dump(), ok=True))

    async def queue_signal(handle: Any, claims: LinkClaims, alert: dict[str, Any],
                           req: AckRequest) -> HTMLResponse:
        try:
            await handle.signal(ACK_SIGNAL, req, rpc_timeout=timedelta(seconds=ack_timeout))
        except RPCError as exc:
            await asyncio.to_thread(store.finish_token, database_url, claims, "released",
                                    f"signal {exc.status.name}")
            if exc.status == RPCStatusCode.NOT_FOUND:
                return _problem(410, "Alert closed", "This alert's workflow has finished: "
                                "there is nothing left to acknowledge.")
            return _problem(503, "Try again in a minute", "The alert service could not take "
                            "the acknowledgement right now; nothing was recorded.")
        await asyncio.to_thread(store.finish_token, database_url, claims, "queued",
                                "no worker answered; sent as signal ack_requested")
        log.info("acknowledgement of %s queued as a signal (no worker answered)",
                 alert["alert_id"])
        return _html(pages.result_page(
            "Acknowledgement recorded", "Your acknowledgement is recorded and will take effect "
            "as soon as the alert service's worker is back (no worker is running right now). "
            "You do not need to do anything else.", alert, ok=True), 202)

    # --- alert history page ---------------------------------------------------------------

    @app.get("/alerts/{alert_id:path}", response_class=HTMLResponse)
    async def alert_page(alert_id: str, token: str = "") -> HTMLResponse:
        try:
            claims = verify(token, "view")
            if claims.alert_id != alert_id:
                raise LinkError("wrong_alert", "This link was issued for another alert.")
        except LinkError as exc:
            return _link_problem(exc)
        detail = await asyncio.to_thread(console_store.alert_detail, database_url,
                                         claims.org_id, alert_id)
        if detail is None:
            return _problem(404, "Alert not found", "This link does not match any alert of "
                            "your organization.")
        return _html(views.alert_page(
            detail, temporal_url=views.temporal_link(temporal_ui_url, namespace, detail.alert)))

    # --- health ---------------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        checks = {"database": "ok", "temporal": "ok"}
        try:
            await asyncio.wait_for(asyncio.to_thread(store.ping, database_url), timeout=5)
        except Exception:
            checks["database"] = "unreachable"
        client = await get_client()
        try:
            if client is None or not await client.service_client.check_health(
                    timeout=timedelta(seconds=3)):
                checks["temporal"] = "unreachable"
        except Exception:
            checks["temporal"] = "unreachable"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", **checks},
                            status_code=200 if healthy else 503)

    @app.get("/", include_in_schema=False)
    async def root() -> Any:
        if inbox:
            return RedirectResponse("/inbox")
        return _html(pages.page("Altaviz", "<h1>Altaviz acknowledgement server</h1>"
                                           "<p>Open the link from your notification.</p>"))

    # --- demo inbox -----------------------------------------------------------------------

    if inbox:
        @app.post("/inbox/receive")
        @app.post("/inbox/receive/{mailbox}")
        async def inbox_receive(request: Request, mailbox: str = "inbox") -> JSONResponse:
            if not _MAILBOX.match(mailbox):
                return JSONResponse({"error": "invalid mailbox name"}, status_code=400)
            try:
                payload = await request.json()
            except ValueError:
                return JSONResponse({"error": "expected a JSON body (Apprise json://)"},
                                    status_code=400)
            if not isinstance(payload, dict) or not isinstance(payload.get("message"), str):
                return JSONResponse({"error": "expected Apprise's JSON payload with 'message'"},
                                    status_code=400)
            title = payload.get("title")
            message_id = await asyncio.to_thread(
                store.inbox_store, database_url, mailbox,
                title if isinstance(title, str) else "", payload["message"],
                str(payload.get("type") or "") or None)
            return JSONResponse({"message_id": message_id})

        @app.get("/inbox", response_class=HTMLResponse)
        async def inbox_list(mailbox: str | None = None) -> HTMLResponse:
            messages = await asyncio.to_thread(store.inbox_messages, database_url, mailbox)
            return _html(pages.inbox_page(messages, mailbox))

    return app


def _plain_http_loopback(url: str) -> bool:
    """Whether the server's public URL is plain HTTP on this machine (the demo): browsers
    would drop a Secure cookie there, and nothing leaves the machine."""
    parts = urlsplit(url)
    return parts.scheme == "http" and (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")


def app_for(altaviz_app: Any, *, demo: bool = False, inbox: bool = False,
            ack_timeout: float = 5.0) -> FastAPI:
    """The ASGI app wired from an :class:`altaviz.app.context.App` (settings, database,
    Temporal), with tokens redacted from the server's logs; what ``altaviz serve`` and
    ``altaviz up`` run.

    Raises:
        ConfigError: no link secret outside the demo.
    """

    settings = altaviz_app.settings
    signer = signer_from_settings(settings, demo=demo)  # refuses without a secret
    web = create_app(
        database_url=altaviz_app.database_url(), signer=signer,
        temporal=altaviz_app.temporal_client, temporal_ui_url=altaviz_app.temporal_ui_url(),
        namespace=settings.temporal_namespace, inbox=demo or inbox, ack_timeout=ack_timeout,
        public_url=settings.base_url,
        session_secret=load_secret(settings, demo=demo),
        secure_cookies=not _plain_http_loopback(settings.base_url))
    for name in ("uvicorn.access", "uvicorn.error", "altaviz"):
        logging.getLogger(name).addFilter(RedactTokens())
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    web.router.routes.append(Route("/metrics", metrics_app(
        altaviz_app.owner_database_url(), settings.landing_path, token)))
    return web
