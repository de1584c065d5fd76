"""One-time sign-in links for the console (``/console/sign-in/link``).

A person enters their login; if it belongs to an active console user who names a contact
(``altaviz users add --contact``), a link valid once and for 15 minutes is sent through that
contact's Apprise URLs, the path alert messages take. The page answers the same whether or not
the login exists or has a channel, and sends in the background so the answer's timing does not
tell either; requests are rate-limited per login and per client address like password sign-in.

The link points to the configured public URL (never the request's Host header, which a client
chooses) and carries a signed, timestamped id of a ``console_sign_in_links`` row. Opening it
shows a button; only posting that button uses the link (a mail scanner that fetches links does
not spend it) and starts a session. A post whose Origin is another site is refused, so a page
elsewhere cannot sign its visitor in as someone else.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from altaviz.app.web import auth, views
from altaviz.core.contacts import expand_secrets, load_apprise
from altaviz.core.db import connect, queries, tenant
from altaviz.core.errors import InputError

LINK_MINUTES = 15
log = logging.getLogger(__name__)


def _q(name: str) -> str:
    return queries("console_links")[name]


class LinkTokens:
    """Signs sign-in link ids with a key of their own (:attr:`auth.SessionSigner.link_key`,
    derived from the server's secret with its own label, so neither an alert link nor a
    session cookie can pass for one)."""

    def __init__(self, key: bytes, max_age_s: int = LINK_MINUTES * 60) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="console-sign-in-link")
        self.max_age_s = max_age_s

    def __repr__(self) -> str:
        return f"LinkTokens(max_age_s={self.max_age_s})"

    def issue(self, org_id: str, link_id: str) -> str:
        return self._serializer.dumps([org_id, link_id])

    def verify(self, token: str) -> tuple[str, str] | None:
        """(organization, link id) of a valid token younger than 15 minutes, else None."""
        try:
            org_id, link_id = self._serializer.loads(token, max_age=self.max_age_s)
        except (BadSignature, ValueError, TypeError):
            return None
        if not (isinstance(org_id, str) and isinstance(link_id, str)):
            return None
        return org_id, link_id


def set_user_contact(conn: psycopg.Connection[Any], org_id: str, login: str,
                     contact_id: str | None) -> None:
    """Name the contact whose channels receive the user's sign-in links (None: no links).

    Raises:
        InputError: no such console user, or no such contact, in the organization.
    """
    try:
        with tenant(conn, org_id):
            row = conn.execute(_q("set_user_contact"), {"login": login,
                                                        "contact_id": contact_id}).fetchone()
    except psycopg.errors.ForeignKeyViolation:
        raise InputError(f"no contact {contact_id!r} in organization {org_id} (see "
                         "`altaviz contacts list`)") from None
    if row is None:
        raise InputError(f"no console user {login!r} in organization {org_id}")


def prepare_link(url: str, login: str, now: datetime
                 ) -> tuple[str, str, str, list[str]] | None:
    """Store a new link for ``login`` if it has a channel: (org, link id, name, Apprise URLs),
    else None."""
    with connect(url) as conn:
        with conn.transaction():
            found = conn.execute(_q("link_lookup"), {"login": login}).fetchone()
        if found is None:
            return None
        org_id = str(found[0])
        with tenant(conn, org_id):
            row = conn.execute(_q("link_channels"), {"login": login}).fetchone()
            if row is None:
                return None
            conn.execute(_q("forget_expired_links"))
            link_id = secrets.token_urlsafe(16)
            conn.execute(_q("insert_link"), {"link_id": link_id, "login": login,
                                             "expires_at": now + timedelta(minutes=LINK_MINUTES)})
    return org_id, link_id, str(row[1]), list(row[0])


def use_link(url: str, org_id: str, link_id: str) -> tuple[str, int] | None:
    """Spend the link (once, unexpired): (login, session epoch), else None."""
    with connect(url) as conn, tenant(conn, org_id):
        row = conn.execute(_q("use_link"), {"link_id": link_id}).fetchone()
    return (str(row[0]), int(row[1])) if row else None


def send_link(urls: list[str], name: str, link: str) -> int:
    """Send the link to each of the contact's channels; returns how many took it."""
    apprise = load_apprise()
    body = (f"{name}, your Altaviz console sign-in link (works once, for {LINK_MINUTES} "
            f"minutes):\n{link}\nIf you did not ask for it, ignore this message.")
    sent = 0
    for raw in urls:
        try:
            url = expand_secrets(raw)
        except InputError as exc:
            log.warning("sign-in link not sent to one channel: %s", exc)
            continue
        ap = apprise.Apprise()
        if not ap.add(url):
            continue
        try:
            if ap.notify(body=body, title="Altaviz sign-in link",
                         body_format=apprise.NotifyFormat.TEXT):
                sent += 1
        except Exception as exc:  # a plugin bug must not break the page
            log.warning("sign-in link not sent: %s", type(exc).__name__)
    if not sent:
        log.warning("a sign-in link reached none of the user's channels")
    return sent


def add_routes(router: APIRouter, *, database_url: str, public_url: str | None,
               start_session: Callable[[str, auth.Session], Response],
               login_limit: auth.RateLimiter, address_limit: auth.RateLimiter,
               tokens: LinkTokens) -> None:
    """Add the link request and link pages to the console's router."""
    signer = tokens
    pending: set[asyncio.Task[int]] = set()
    answer = (f"If that login can receive messages, a sign-in link is on its way to its "
              f"channels. It works once, within {LINK_MINUTES} minutes.")

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(views.render(template, **context), status_code=status)

    @router.get("/sign-in/link", response_class=HTMLResponse)
    async def link_form() -> HTMLResponse:
        return page("sign_in_link.html", login="", message=None, error=None)

    @router.post("/sign-in/link", response_class=HTMLResponse)
    async def link_request(request: Request, login: str = Form("")) -> HTMLResponse:
        login = login.strip().lower()
        client = request.client.host if request.client else "unknown"
        wait = max(login_limit.retry_after(login), address_limit.retry_after(client))
        if wait:
            return page("sign_in_link.html", 429, login=login, message=None,
                        error=f"Too many requests. Try again in {max(1, wait // 60)} min.")
        # every request counts, found or not: the limit must not tell which logins exist
        login_limit.failed(login)
        address_limit.failed(client)
        if login and public_url:
            task = asyncio.create_task(_deliver(login))
            pending.add(task)
            task.add_done_callback(pending.discard)
        elif login:
            log.warning("no public URL configured (ALTAVIZ_PUBLIC_URL): sign-in links are "
                        "not sent")
        return page("sign_in_link.html", login=login, message=answer, error=None)

    async def _deliver(login: str) -> int:
        try:
            found = await asyncio.to_thread(prepare_link, database_url, login,
                                            datetime.now(UTC))
            if found is None:
                return 0
            org_id, link_id, name, urls = found
            link = f"{(public_url or '').rstrip('/')}/console/sign-in/link/" \
                   f"{signer.issue(org_id, link_id)}"
            return await asyncio.to_thread(send_link, urls, name, link)
        except Exception as exc:  # logged, never shown: the answer is the same either way
            log.warning("sign-in link not sent: %s", type(exc).__name__)
            return 0

    @router.get("/sign-in/link/{token}", response_class=HTMLResponse)
    async def link_open(token: str) -> HTMLResponse:
        if signer.verify(token) is None:
            return page("sign_in_link.html", 410, login="", message=None,
                        error="This sign-in link has expired or is not valid. Ask for a "
                              "new one.")
        return page("sign_in_link_open.html", token=token)

    @router.post("/sign-in/link/{token}")
    async def link_use(request: Request, token: str) -> Response:
        client = request.client.host if request.client else "unknown"
        if _cross_site(request, public_url):
            # another site posting someone's link would sign its visitor in as that person
            return page("sign_in_link.html", 403, login="", message=None,
                        error="Open the sign-in link from your message, not from another "
                              "site.")
        claims = signer.verify(token)
        used = await asyncio.to_thread(use_link, database_url, *claims) if claims else None
        if claims is None or used is None:
            address_limit.failed(client)
            return page("sign_in_link.html", 410, login="", message=None,
                        error="This sign-in link was already used, has expired or is not "
                              "valid. Ask for a new one.")
        login, epoch = used
        login_limit.succeeded(login)
        await asyncio.to_thread(_record, database_url, claims[0], login)
        return start_session("/console/alerts", auth.Session(claims[0], login, epoch))


def _cross_site(request: Request, public_url: str | None) -> bool:
    """Whether the browser says the post came from another site: ``Sec-Fetch-Site`` other
    than same-origin, or an ``Origin`` that is not the public URL's (browsers send
    ``Origin: null`` under the pages' no-referrer policy, which says nothing either way)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin") or "null"
    parts = urlsplit(public_url or "")
    return origin != "null" and origin.rstrip("/") != f"{parts.scheme}://{parts.netloc}"


def _record(url: str, org_id: str, login: str) -> None:
    with connect(url) as conn, tenant(conn, org_id):
        conn.execute(queries("console")["record_sign_in"], {"login": login})
