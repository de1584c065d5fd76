"""Notification activities: route an alert step to its contacts and deliver it with Apprise.

``plan_notification`` and ``deliver`` are what ``workflows.notify.NotifyStepWorkflow`` runs:
the plan names contacts and channels (URL schemes), and each ``deliver`` sends one step to one
channel of one contact, reading the URL from PostgreSQL so that no URL (they carry credentials)
ever enters workflow history. ``notify`` delivers a whole step in one activity; alerts started
before notification steps became their own workflows still call it.

Routing follows the organization's escalation policy (:mod:`altaviz.core.policy`): who hears
about a new alert of each severity, an escalation and a reminder.

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
import re
import threading
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise
import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from altaviz.core.contacts import expand_secrets, load_apprise, url_scheme
from altaviz.core.db import connect, queries, tenant
from altaviz.core.errors import InputError
from altaviz.core.links import (
    LinkSigner,
    short_url,
    signer_from_settings,
    store_short_link,
)
from altaviz.core.messages import Message, MessageContext, load_context, render
from altaviz.core.payloads import (
    AlertState,
    DeliveryOutcome,
    DeliveryPlan,
    DeliveryTarget,
    NotifyRequest,
    NotifyResult,
    PlannedContact,
)
from altaviz.core.policy import PolicyFile
from altaviz.core.settings import Settings

log = logging.getLogger(__name__)

#: ApplicationError type raised when some channel failed (retryable).
DELIVERY_FAILED = "NotificationDeliveryFailed"
#: ApplicationError type of a delivery that can never succeed (invalid URL, contact gone).
DELIVERY_REJECTED = "DeliveryRejected"

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


class _Capture:
    """What Apprise logged while delivering to one URL, scrubbed, newest last."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[str] = []


#: The delivery under way in this context. Apprise hands each service to a thread pool with a
#: copy of the caller's context, so its worker threads see the delivery that started them.
_DELIVERY: ContextVar[_Capture | None] = ContextVar("altaviz_delivery", default=None)
#: Apprise's debug lines that carry the reason of a failure (an SMTP reply, a timeout).
_REASON = re.compile(r"^[A-Za-z][A-Za-z ]* Exception\b")


class _AppriseLog(logging.Filter):
    """Takes Apprise's log records of a delivery out of the log and onto the delivery.

    Apprise logs a failure's real reason (an HTTP status, an SMTP reply, a timeout) in the
    thread that delivers, with phone numbers, addresses and tokens in it. During a delivery
    every record of the ``apprise`` logger is scrubbed onto the delivery's capture and never
    reaches a log handler; other records pass as they would have without this filter.
    """

    def __init__(self, passthrough: int) -> None:
        super().__init__()
        self.passthrough = passthrough

    def filter(self, record: logging.LogRecord) -> bool:
        capture = _DELIVERY.get()
        if capture is None:
            level = self.passthrough or logging.getLogger().getEffectiveLevel()
            return record.levelno >= level
        text = record.getMessage()
        if record.levelno >= logging.WARNING or _REASON.match(text):
            capture.messages.append(_scrub(text, capture.url))
        return False


_install_lock = threading.Lock()


def _capture_apprise_logs() -> None:
    """Install :class:`_AppriseLog` once per process; the logger must pass DEBUG records for
    the filter to see the reasons Apprise logs at that level."""
    apprise_log = logging.getLogger("apprise")
    with _install_lock:
        if any(isinstance(f, _AppriseLog) for f in apprise_log.filters):
            return
        apprise_log.addFilter(_AppriseLog(apprise_log.level))
        apprise_log.setLevel(logging.DEBUG)


#: Apprise URL parameters that are delivery options, not credentials or recipients.
_OPTIONS = frozenset({"format", "overflow", "emojis", "verify", "rto", "cto", "store", "tz",
                      "method", "mode", "retry", "wait", "optional", "priority", "lang"})
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ()-]{5,}\d")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{24,}")


def _scrub(text: str, url: str) -> str:
    """An error text without the URL's secrets or anyone's address.

    Apprise URLs carry passwords, API tokens and recipients (phone numbers, e-mail addresses)
    in their user, password, path and query: all are removed, as are any e-mail address, phone
    number or token-like string in the text itself.
    """
    out = text.replace(url, f"{url_scheme(url)}://...")
    try:
        parts = urlsplit(url)
        hidden = [parts.password, parts.username, parts.hostname, str(parts.port or ""),
                  *unquote(parts.path).split("/"),
                  *(v for k, v in parse_qsl(parts.query) if k.lower() not in _OPTIONS)]
    except ValueError:
        hidden = []
    for value in sorted((v for v in hidden if v and len(v) >= 3), key=len, reverse=True):
        out = out.replace(value, "***")
    out = _EMAIL.sub("<address>", out)
    out = _PHONE.sub("<number>", out)
    out = _TOKEN.sub("***", out)
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


def roles_for(req: NotifyRequest, policy: PolicyFile) -> list[str]:
    """The roles a step goes to under the organization's policy (``all_notified``: none, the
    step goes to whoever was notified before)."""
    org = policy.for_org(req.alert.org_id)
    if req.event == "opened":
        return list(org.roles_at_open(req.alert.severity))
    if req.event == "reminder":
        return list(org.reminders_to)
    if req.audience == "technicians":
        return ["technician"]
    if req.audience == "technicians_and_supervisors":
        return list(dict.fromkeys([*org.escalate_to, "technician"]))
    return []


class NotificationActivities:
    """Notification delivery, with its dependencies given once at worker start-up.

    Args:
        database_url: PostgreSQL URL (each delivery uses its own short transaction).
        settings: for ``base_url`` (links) and the link secret and TTL.
        signer: the link signer; default: from ``settings`` (``ALTAVIZ_LINK_SECRET``, or with
            ``demo=True`` the demo's generated secret shared with ``altaviz serve --demo``).
        demo: allow the demo's generated link secret.
        policy: the escalation policy (default: the built-in one).
    """

    def __init__(self, database_url: str, settings: Settings, *,
                 signer: LinkSigner | None = None, demo: bool = False,
                 policy: PolicyFile | None = None) -> None:
        self._url = database_url
        self._settings = settings
        self._signer = signer or signer_from_settings(settings, demo=demo)
        self._base_url = settings.base_url
        self._policy = policy or PolicyFile()

    def __repr__(self) -> str:
        return "NotificationActivities()"

    def all(self) -> list[Any]:
        """Every notification activity, for a worker's registration."""
        return [self.notify, self.plan_notification, self.deliver]

    @activity.defn(name="plan_notification")
    def plan_notification(self, req: NotifyRequest) -> DeliveryPlan:
        """Who one step goes to, and who stands behind them in the escalation chain."""
        q = queries("notify")
        alert = req.alert
        policy = self._policy.for_org(alert.org_id)
        with connect(self._url) as conn, tenant(conn, alert.org_id):
            site = [_planned(r) for r in conn.execute(
                q["contacts_for_site"], {"site_id": alert.site_id}).fetchall()]
            recipients = self._recipients(conn, req, site)
            last = None
            if policy.fallback_contact:
                row = conn.execute(q["contact_for_delivery"],
                                   {"contact_id": policy.fallback_contact}).fetchone()
                if row is not None and row[3]:
                    last = PlannedContact(contact_id=row[0], role=row[2],
                                          channels=[c for c, _ in channels_of(row[4])])
        levels: dict[str, list[PlannedContact]] = {}
        for c in site:
            levels.setdefault(c.role, []).append(c)
        if req.event == "resolved":
            levels = {}  # nothing to act on: an unreachable recipient is recorded, not replaced
        return DeliveryPlan(recipients=recipients, levels=levels, chain=list(policy.chain),
                            fallback_contact=last)

    def _recipients(self, conn: psycopg.Connection[Any], req: NotifyRequest,
                    site: list[PlannedContact]) -> list[PlannedContact]:
        if req.audience == "all_notified":
            rows = conn.execute(queries("notify")["recipients_notified"], {
                "alert_id": req.alert.alert_id, "step": req.step}).fetchall()
            return [PlannedContact(contact_id=r[0], role=r[2],
                                   channels=[c for c, _ in channels_of(r[3])]) for r in rows]
        roles = roles_for(req, self._policy)
        return [c for c in site if c.role in roles]

    @activity.defn(name="deliver")
    def deliver(self, target: DeliveryTarget) -> DeliveryOutcome:
        """Send one step to one channel of one contact, at most once.

        Raises:
            ApplicationError: ``NotificationDeliveryFailed`` (retryable) when the service did
                not take the message; ``DeliveryRejected`` (not retryable) when it never will
                (invalid URL, channel removed, contact deactivated). Every attempt is recorded
                in ``notifications`` first.
        """
        q = queries("notify")
        alert = target.alert
        with connect(self._url) as conn, tenant(conn, alert.org_id):
            row = conn.execute(q["contact_for_delivery"],
                               {"contact_id": target.contact_id}).fetchone()
            if row is None or not row[3]:
                raise ApplicationError(f"contact {target.contact_id} is no longer active",
                                       type=DELIVERY_REJECTED, non_retryable=True)
            url = dict(channels_of(row[4])).get(target.channel)
            if url is None:
                raise ApplicationError(
                    f"contact {target.contact_id} has no channel {target.channel} any more",
                    type=DELIVERY_REJECTED, non_retryable=True)
            ctx = load_context(conn, alert)
            recipient = _Recipient(row[0], row[1], row[2], tuple(row[4]))
            message = self._render(conn, alert, target.event, recipient, ctx)
        if target.note:
            message = replace(message, full=f"{target.note}\n\n{message.full}")
        t = _Target(target.contact_id, target.channel, url, message.title,
                    message.body_for(target.channel.split("-")[0]))
        outcome = self._deliver(alert, target.step, target.event, t)
        if outcome.status == "failed":
            raise ApplicationError(
                f"{target.contact_id}/{target.channel}: {outcome.error}",
                type=DELIVERY_FAILED if outcome.retryable else DELIVERY_REJECTED,
                non_retryable=not outcome.retryable)
        return DeliveryOutcome(status="skipped" if outcome.status == "skipped" else "sent")

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Deliver one alert step to every routed contact on every channel, at most once each.

        Raises:
            ApplicationError: (retryable, type ``NotificationDeliveryFailed``) some channel
                failed transiently; everything delivered is recorded and will not be resent.
        """
        recipients, messages = await asyncio.to_thread(self._plan, req)
        targets: list[_Target] = []
        for r, message in zip(recipients, messages, strict=True):
            for channel, url in channels_of(r.urls):
                targets.append(_Target(r.contact_id, channel, url, message.title,
                                       message.body_for(channel.split("-")[0])))
        outcomes = await asyncio.gather(
            *(asyncio.to_thread(self._deliver, req.alert, req.step, req.event, t)
              for t in targets))
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

    def _plan(self, req: NotifyRequest) -> tuple[list[_Recipient], list[Message]]:
        q = queries("notify")
        alert = req.alert
        with connect(self._url) as conn, tenant(conn, alert.org_id):
            if req.audience == "all_notified":
                rows = conn.execute(q["recipients_notified"],
                                    {"alert_id": alert.alert_id, "step": req.step}).fetchall()
            else:
                rows = conn.execute(q["recipients_by_role"],
                                    {"roles": roles_for(req, self._policy),
                                     "site_id": alert.site_id}).fetchall()
            ctx = load_context(conn, alert)
            recipients = [_Recipient(r[0], r[1], r[2], tuple(r[3])) for r in rows]
            messages = [self._render(conn, alert, req.event, r, ctx) for r in recipients]
        return recipients, messages

    def _render(self, conn: psycopg.Connection[Any], alert: AlertState, event: str,
                r: _Recipient, ctx: MessageContext) -> Message:
        """The message for one recipient, with their own short acknowledgement link (stored
        in the alert's tenant transaction ``conn``)."""
        ack = None
        if event != "resolved" and alert.ack_state != "acknowledged":
            code, record = self._signer.issue_short(
                org_id=alert.org_id, alert_id=alert.alert_id, contact_id=r.contact_id,
                action="ack")
            store_short_link(conn, record)
            ack = short_url(self._base_url, alert.org_id, code)
        view = None
        if r.role in ("supervisor", "manager"):
            code, record = self._signer.issue_short(
                org_id=alert.org_id, alert_id=alert.alert_id, contact_id=r.contact_id,
                action="view")
            store_short_link(conn, record)
            view = short_url(self._base_url, alert.org_id, code)
        return render(alert, event, ctx, ack_url=ack, view_url=view)

    # --- delivery ------------------------------------------------------------------------

    def _deliver(self, alert: AlertState, step: str, event: str, t: _Target) -> _Outcome:
        q = queries("notify")
        key = {"alert_id": alert.alert_id, "step": step, "contact_id": t.contact_id,
               "channel": t.channel}
        with connect(self._url) as conn, tenant(conn, alert.org_id):
            conn.execute(q["delivery_lock"], {"key": "|".join(key.values())})
            row = conn.execute(q["delivery_status"], key).fetchone()
            attempts, already_sent = (int(row[0]), bool(row[1])) if row else (0, False)
            if already_sent:
                return _Outcome(t.contact_id, t.channel, "skipped")
            ok, retryable, error = self._send(t, alert, event)
            conn.execute(q["record_attempt"], {
                **key, "attempt": attempts + 1, "status": "sent" if ok else "failed",
                "error": error, "title": t.title})
        if not ok:
            # One line per failed delivery; the target is named by contact and scheme only
            # (its URL may hold a password or a recipient), the reason is scrubbed.
            log.warning("delivery failed: alert %s step %s to %s/%s (%s://...) attempt %d: "
                        "%s%s", alert.alert_id, step, t.contact_id, t.channel,
                        url_scheme(t.url), attempts + 1, error,
                        "" if retryable else " (not retried)")
        return _Outcome(t.contact_id, t.channel, "sent" if ok else "failed", retryable, error)

    def _send(self, t: _Target, alert: AlertState, event: str) -> tuple[bool, bool, str | None]:
        """(delivered, worth retrying, error text) for one URL."""
        load_apprise()
        _capture_apprise_logs()
        try:
            url = expand_secrets(t.url)   # ${NAME} from the worker's environment
        except InputError as exc:
            return False, False, str(exc)
        capture = _Capture(url)
        token = _DELIVERY.set(capture)  # from here Apprise logs onto the delivery only
        result: Any
        try:
            ap = apprise.Apprise()
            if not ap.add(url):
                return False, False, f"invalid or unsupported Apprise URL ({url_scheme(t.url)})"
            notify_type = _NOTIFY_TYPES.get(event) or (
                apprise.NotifyType.FAILURE if alert.severity == "critical"
                else apprise.NotifyType.WARNING)
            result = ap.notify(body=t.body, title=t.title, notify_type=notify_type,
                               body_format=apprise.NotifyFormat.TEXT)
        except Exception as exc:  # a plugin bug must not lose the attempt record
            result = False
            capture.messages.append(_scrub(f"{type(exc).__name__}: {exc}", url))
        finally:
            _DELIVERY.reset(token)
        # Apprise 2 returns an AppriseResult (truthy on success); older ones True/False; None
        # when no service matched. Anything but a truthy, non-None result is a failure.
        if result is not None and bool(result):
            return True, False, None
        reasons = list(dict.fromkeys(capture.messages))[-4:]
        if getattr(result, "timeout_count", 0):
            reasons.insert(0, "timed out")
        detail = "; ".join(reasons) or (
            "Apprise returned None (no service matched)" if result is None
            else "Apprise returned False")
        return False, True, detail[:500]


def _planned(row: tuple[Any, ...]) -> PlannedContact:
    return PlannedContact(contact_id=row[0], role=row[2],
                          channels=[c for c, _ in channels_of(row[3])])
