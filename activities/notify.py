"""The ``notify`` activity: route one alert step to its contacts and deliver it with Apprise.

Delivery guarantees, all enforced in PostgreSQL so they hold across retries and workers:

* at most once per (alert, step, contact, channel): each delivery runs under a transaction-level
  advisory lock on that key, skips the key if a ``sent`` row exists, and the partial unique
  index ``notifications_delivered_once`` refuses a second ``sent`` row in any case;
* every attempt is a row in ``notifications`` (``sent`` or ``failed``, with the attempt number);
  the channel column holds the URL scheme only, never the URL, which may carry credentials;
* one failing channel does not hold up the others (deliveries run concurrently), and when some
  failed the activity raises a retryable error *after* recording everything, so the workflow's
  retry policy backs off and the next attempt sends only what is still missing.

Apprise signals failure by returning False (or None when no service matched) rather than
raising, so its return value is checked explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import apprise
from temporalio import activity
from temporalio.exceptions import ApplicationError

from altaviz.core.contacts import load_apprise, url_scheme
from altaviz.core.db import connect, queries, tenant
from altaviz.core.links import LinkSigner, ack_url, alert_url, signer_from_settings
from altaviz.core.messages import Message, MessageContext, load_context, render
from altaviz.core.payloads import NotifyRequest, NotifyResult
from altaviz.core.settings import Settings

log = logging.getLogger(__name__)

#: ApplicationError type raised when some channel failed (retryable).
DELIVERY_FAILED = "NotificationDeliveryFailed"

_ROLES = {"technicians": ["technician"],
          "technicians_and_supervisors": ["technician", "supervisor"]}
_NOTIFY_TYPES = {"resolved": apprise.NotifyType.SUCCESS, "cleared": apprise.NotifyType.INFO}


@dataclass(frozen=True)
class _Recipient:
    contact_id: str
    name: str
    role: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class _Target:
    contact_id: str
    channel: str
    url: str
    title: str
    body: str


@dataclass(frozen=True)
class _Outcome:
    contact_id: str
    channel: str
    status: str          # sent | failed | skipped (already sent earlier)
    retryable: bool = False
    error: str | None = None


class _ThreadLogCapture(logging.Handler):
    """Collects Apprise's warnings of the current thread only (deliveries run concurrently)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def _scrub(text: str, url: str) -> str:
    """An error text with the URL and its password removed (Apprise URLs carry secrets)."""
    from urllib.parse import urlsplit

    out = text.replace(url, f"{url_scheme(url)}://...")
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        out = out.replace(password, "***")
    return out[:500]


def channels_of(urls: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(channel, url) pairs: the channel is the scheme, numbered when a scheme repeats
    (``mailto``, ``mailto-2``), so each URL has its own delivered-once key."""
    seen: dict[str, int] = {}
    out = []
    for url in urls:
        scheme = url_scheme(url)
        seen[scheme] = seen.get(scheme, 0) + 1
        out.append((scheme if seen[scheme] == 1 else f"{scheme}-{seen[scheme]}", url))
    return out


class NotificationActivities:
    """Notification delivery, with its dependencies given once at worker start-up.

    Args:
        database_url: PostgreSQL URL (each delivery uses its own short transaction).
        settings: for ``base_url`` (links) and the link secret and TTL.
        signer: the link signer; default: from ``settings`` (``ALTAVIZ_LINK_SECRET``, or with
            ``demo=True`` the demo's generated secret shared with ``altaviz serve --demo``).
        demo: allow the demo's generated link secret.
    """

    def __init__(self, database_url: str, settings: Settings, *,
                 signer: LinkSigner | None = None, demo: bool = False) -> None:
        self._url = database_url
        self._settings = settings
        self._signer = signer or signer_from_settings(settings, demo=demo)
        self._base_url = settings.base_url

    def __repr__(self) -> str:
        return "NotificationActivities()"

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Deliver one alert step to every routed contact on every channel, at most once each.

        Raises:
            ApplicationError: (retryable, type ``NotificationDeliveryFailed``) some channel
                failed transiently; everything delivered is recorded and will not be resent.
        """
        recipients, ctx = await asyncio.to_thread(self._plan, req)
        targets: list[_Target] = []
        for r in recipients:
            message = self._message(req, r, ctx)
            for channel, url in channels_of(r.urls):
                targets.append(_Target(r.contact_id, channel, url, message.title,
                                       message.body_for(channel.split("-")[0])))
        outcomes = await asyncio.gather(
            *(asyncio.to_thread(self._deliver, req, t) for t in targets))
        sent = sum(1 for o in outcomes if o.status in ("sent", "skipped"))
        failed = [o for o in outcomes if o.status == "failed"]
        result = NotifyResult(delivered=sent, failed=len(failed),
                              recipients=[r.contact_id for r in recipients])
        if any(o.retryable for o in failed):
            summary = ", ".join(f"{o.contact_id}/{o.channel}: {o.error}" for o in failed)
            raise ApplicationError(
                f"{len(failed)} of {len(targets)} deliveries failed for {req.alert.alert_id} "
                f"step {req.step}: {summary}", result.model_dump(mode="json"),
                type=DELIVERY_FAILED, non_retryable=False)
        if failed:
            log.warning("notify %s step %s: %d delivery(ies) failed permanently",
                        req.alert.alert_id, req.step, len(failed))
        return result

    # --- planning ------------------------------------------------------------------------

    def _plan(self, req: NotifyRequest) -> tuple[list[_Recipient], MessageContext]:
        q = queries("notify")
        alert = req.alert
        with connect(self._url) as conn, tenant(conn, alert.org_id):
            if req.audience == "all_notified":
                rows = conn.execute(q["recipients_notified"],
                                    {"alert_id": alert.alert_id, "step": req.step}).fetchall()
            else:
                rows = conn.execute(q["recipients_by_role"],
                                    {"roles": _ROLES[req.audience],
                                     "site_id": alert.site_id}).fetchall()
            ctx = load_context(conn, alert)
        return [_Recipient(r[0], r[1], r[2], tuple(r[3])) for r in rows], ctx

    def _message(self, req: NotifyRequest, r: _Recipient, ctx: MessageContext) -> Message:
        alert = req.alert
        ack = None
        if req.event != "resolved" and alert.ack_state != "acknowledged":
            ack = ack_url(self._base_url, self._signer.issue(
                org_id=alert.org_id, alert_id=alert.alert_id, contact_id=r.contact_id,
                action="ack"))
        view = None
        if r.role == "supervisor":
            view = alert_url(self._base_url, alert.alert_id, self._signer.issue(
                org_id=alert.org_id, alert_id=alert.alert_id, contact_id=r.contact_id,
                action="view"))
        return render(alert, req.event, ctx, ack_url=ack, view_url=view)

    # --- delivery ------------------------------------------------------------------------

    def _deliver(self, req: NotifyRequest, t: _Target) -> _Outcome:
        q = queries("notify")
        alert = req.alert
        key = {"alert_id": alert.alert_id, "step": req.step, "contact_id": t.contact_id,
               "channel": t.channel}
        with connect(self._url) as conn, tenant(conn, alert.org_id):
            conn.execute(q["delivery_lock"], {"key": "|".join(key.values())})
            row = conn.execute(q["delivery_status"], key).fetchone()
            attempts, already_sent = (int(row[0]), bool(row[1])) if row else (0, False)
            if already_sent:
                return _Outcome(t.contact_id, t.channel, "skipped")
            ok, retryable, error = self._send(t, req)
            conn.execute(q["record_attempt"], {
                **key, "attempt": attempts + 1, "status": "sent" if ok else "failed",
                "error": error, "title": t.title})
        return _Outcome(t.contact_id, t.channel, "sent" if ok else "failed", retryable, error)

    def _send(self, t: _Target, req: NotifyRequest) -> tuple[bool, bool, str | None]:
        """(delivered, worth retrying, error text) for one URL."""
        load_apprise()
        ap = apprise.Apprise()
        if not ap.add(t.url):
            return False, False, f"invalid or unsupported Apprise URL ({url_scheme(t.url)})"
        notify_type = _NOTIFY_TYPES.get(req.event) or (
            apprise.NotifyType.FAILURE if req.alert.severity == "critical"
            else apprise.NotifyType.WARNING)
        capture = _ThreadLogCapture()
        apprise_log = logging.getLogger("apprise")
        apprise_log.addHandler(capture)
        result: object
        try:
            result = ap.notify(body=t.body, title=t.title, notify_type=notify_type,
                               body_format=apprise.NotifyFormat.TEXT)
        except Exception as exc:  # a plugin bug must not lose the attempt record
            result = False
            capture.messages.append(f"{type(exc).__name__}: {exc}")
        finally:
            apprise_log.removeHandler(capture)
        # Apprise 2 returns an AppriseResult (truthy on success); older ones True/False; None
        # when no service matched. Anything but a truthy, non-None result is a failure.
        if result is not None and bool(result):
            return True, False, None
        detail = "; ".join(capture.messages[-3:]) or (
            "Apprise returned None (no service matched)" if result is None
            else "Apprise returned False")
        return False, True, _scrub(detail, t.url)
