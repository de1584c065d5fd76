"""Signed one-click links: acknowledge an alert, or view its history, without an account.

A token names one organization, one alert, one recipient (contact) and one action, carries its
own expiry and a random id, and is signed with HMAC-SHA256 under the server secret. Because the
signature covers every field, changing any of them (another alert, another recipient, "view"
turned into "ack", a later expiry) invalidates the link; the database never stores tokens, only
the ids of used ones (table ``link_tokens_used``), which is what makes an ack link single-use.

Format: ``v2.<key id>.<payload>.<signature>``, base64url without padding; the payload is
compact JSON, so an SMS link stays around 200 characters. The key id is derived from the key
(never the key itself), so two keys can be valid at once: the current one signs, the previous
one (``ALTAVIZ_LINK_SECRET_PREVIOUS``) still verifies the links it signed until they expire.
Tokens of the older ``v1.<payload>.<signature>`` format, which name no key, are checked
against every configured key.

Messages carry a *short* link instead, ``/a/<org_id>/<code>``: the code is a random id and a
signature of that id together with the claims, which are stored server-side in
``short_links`` under the id (:func:`store_short_link`). Verifying looks the claims up and
checks the signature against them, so a short link is as signed, expiring and single-use as a
long one (its ``token_id`` is what ``link_tokens_used`` records), but about 25 characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import psycopg

from altaviz.core.db import queries
from altaviz.core.errors import ConfigError, TerminalError
from altaviz.core.settings import Settings

Action = Literal["ack", "view"]
ACTIONS: tuple[Action, ...] = ("ack", "view")
_VERSION = "v2"
_LEGACY = "v1"
_DOMAIN = b"altaviz-link-v1."   # separates link signatures from any other use of the secret
_KID_DOMAIN = b"altaviz-link-key-id."
_SHORT_DOMAIN = b"altaviz-short-link-v1."
#: A short link's code: a 12-character random id, then a 12-character signature.
SHORT_CODE = re.compile(r"^([A-Za-z0-9_-]{12})([A-Za-z0-9_-]{12})$")
MIN_SECRET_BYTES = 32
DEMO_SECRET_FILE = "link_secret"

LinkProblem = Literal["malformed", "forged", "expired", "wrong_action", "wrong_alert"]


class LinkError(TerminalError):
    """The link is not valid: it was altered, forged, has expired or is for something else."""

    def __init__(self, problem: LinkProblem, message: str) -> None:
        super().__init__(message)
        self.problem: LinkProblem = problem


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token grants: ``action`` on ``alert_id`` of ``org_id``, for one contact."""

    org_id: str
    alert_id: str
    contact_id: str
    action: Action
    expires_at: datetime
    token_id: str

    @property
    def request_id(self) -> str:
        """The idempotency key of the acknowledgement this link makes (one per token)."""
        return f"link-{self.token_id}"


@dataclass(frozen=True)
class ShortLink:
    """The claims of a short link, as stored under its id (the signature is only in the
    link)."""

    short_id: str
    org_id: str
    alert_id: str
    contact_id: str
    action: Action
    expires_at: datetime
    key_id: str

    def signed_text(self) -> bytes:
        """What the code's signature covers: the id and every claim, unambiguously."""
        return _SHORT_DOMAIN + json.dumps(
            [self.short_id, self.org_id, self.alert_id, self.contact_id, self.action,
             int(self.expires_at.timestamp())], separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_secret(value: bytes, name: str = "the link secret") -> None:
    """Refuse a secret that is short or predictable, naming the setting ``name``.

    Anyone who guesses the secret can acknowledge any alert. Length alone lets ``aaaa...``
    through, so the value must also look random: its character statistics (Shannon estimate
    of at least 128 bits) and its compressibility (repetitions shrink under zlib).

    Raises:
        ConfigError: shorter than :data:`MIN_SECRET_BYTES` or low in entropy.
    """
    fix = "use at least 32 random bytes, e.g. `openssl rand -hex 32`"
    if len(value) < MIN_SECRET_BYTES:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_BYTES} bytes long: {fix}")
    counts = Counter(value)
    bits = -sum(n * math.log2(n / len(value)) for n in counts.values())
    packed = len(zlib.compress(value, 9)) - 11  # zlib's header, trailer and block overhead
    if bits < 128 or packed < 0.6 * len(value):
        raise ConfigError(f"{name} is not random enough (repeated or too few distinct "
                          f"characters): {fix}")


def key_id(secret: bytes) -> str:
    """The public id of a key: a hash of it, so tokens can name their key without revealing
    it."""
    return _b64(hashlib.sha256(_KID_DOMAIN + secret).digest()[:6])


class LinkSigner:
    """Issues links under the current key and verifies links of any configured key.

    Args:
        secret: the current key (``ALTAVIZ_LINK_SECRET``): signs every new link.
        ttl: how long issued links stay valid.
        previous: earlier keys (``ALTAVIZ_LINK_SECRET_PREVIOUS``) whose links still verify
            until they expire, so a rotation breaks no link already sent.
    """

    def __init__(self, secret: bytes, ttl: timedelta = timedelta(hours=72),
                 previous: Sequence[bytes] = ()) -> None:
        check_secret(secret)
        for key in previous:
            check_secret(key, "the previous link secret")
        self._secret = secret
        self._kid = key_id(secret)
        self._keys = {key_id(k): k for k in (*previous, secret)}
        self.ttl = ttl

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a log line
        return f"LinkSigner(key_id={self._kid!r}, keys={len(self._keys)}, ttl={self.ttl})"

    @property
    def key_id(self) -> str:
        """The id of the key new links are signed with."""
        return self._kid

    @staticmethod
    def _mac(key: bytes, signed: str) -> bytes:
        return hmac.new(key, _DOMAIN + signed.encode("ascii"), hashlib.sha256).digest()

    def issue(self, *, org_id: str, alert_id: str, contact_id: str, action: Action,
              now: datetime | None = None, ttl: timedelta | None = None) -> str:
        """A new token (with a fresh random id) for ``action`` on one alert by one contact."""
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}")
        issued = now or datetime.now(UTC)
        expires = int((issued + (ttl or self.ttl)).timestamp())
        payload = {"o": org_id, "a": alert_id, "r": contact_id, "x": action, "e": expires,
                   "n": secrets.token_urlsafe(12)}
        payload_b64 = _b64(json.dumps(payload, separators=(",", ":")).encode())
        signed = f"{self._kid}.{payload_b64}"
        return f"{_VERSION}.{signed}.{_b64(self._mac(self._secret, signed))}"

    def issue_short(self, *, org_id: str, alert_id: str, contact_id: str, action: Action,
                    now: datetime | None = None, ttl: timedelta | None = None
                    ) -> tuple[str, ShortLink]:
        """A short link's code and the record to store under its id (:func:`store_short_link`)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown link action {action!r}")
        issued = now or datetime.now(UTC)
        expires = datetime.fromtimestamp(int((issued + (ttl or self.ttl)).timestamp()), UTC)
        record = ShortLink(short_id=_b64(secrets.token_bytes(9)), org_id=org_id,
                           alert_id=alert_id, contact_id=contact_id, action=action,
                           expires_at=expires, key_id=self._kid)
        mac = hmac.new(self._secret, record.signed_text(), hashlib.sha256).digest()[:9]
        return record.short_id + _b64(mac), record

    def verify_short(self, org_id: str, code: str, record: ShortLink | None, *,
                     action: Action, now: datetime | None = None) -> LinkClaims:
        """The claims of a genuine, unexpired short link for ``action``.

        Args:
            org_id: the organization named in the link's path.
            code: the link's code (id and signature).
            record: what is stored under the code's id (None: nothing is).

        Raises:
            LinkError: malformed, unknown, forged or altered (the stored claims or the link),
                signed by a key no longer configured, expired, or made for another action.
        """
        m = SHORT_CODE.match(code)
        if m is None:
            raise LinkError("malformed", "This link is incomplete or damaged.")
        if record is None or record.short_id != m.group(1) or record.org_id != org_id:
            raise LinkError("forged", "This link was not issued by this server or has been "
                                      "altered.")
        key = self._keys.get(record.key_id)
        expected = b"" if key is None else \
            hmac.new(key, record.signed_text(), hashlib.sha256).digest()[:9]
        try:
            given = _unb64(m.group(2))
        except (binascii.Error, ValueError):
            raise LinkError("malformed", "This link is incomplete or damaged.") from None
        if not hmac.compare_digest(given, expected):
            raise LinkError("forged", "This link was not issued by this server or has been "
                                      "altered.")
        if record.action != action:
            raise LinkError("wrong_action", f"This is a link to {_describe(record.action)}, "
                                            f"not to {_describe(action)}.")
        if (now or datetime.now(UTC)) >= record.expires_at:
            raise LinkError("expired", "This link expired on "
                            f"{record.expires_at:%Y-%m-%d %H:%M} UTC.")
        return LinkClaims(org_id=record.org_id, alert_id=record.alert_id,
                          contact_id=record.contact_id, action=record.action,
                          expires_at=record.expires_at, token_id=f"s-{record.short_id}")

    def verify(self, token: str, *, action: Action, now: datetime | None = None) -> LinkClaims:
        """The claims of a genuine, unexpired token for ``action``.

        The signature is checked (timing-safe) before anything in the payload is trusted. A
        ``v2`` token is checked against the key it names (covered by the signature); a ``v1``
        token, from before key ids, against each configured key.

        Raises:
            LinkError: malformed, forged or altered, signed by a key no longer configured,
                expired, or made for another action.
        """
        parts = token.split(".")
        if len(token) > 2048 or not ((len(parts) == 4 and parts[0] == _VERSION)
                                     or (len(parts) == 3 and parts[0] == _LEGACY)):
            raise LinkError("malformed", "This link is incomplete or damaged.")
        try:
            given = _unb64(parts[-1])
        except (binascii.Error, ValueError):
            raise LinkError("malformed", "This link is incomplete or damaged.") from None
        payload_b64 = parts[-2]
        if parts[0] == _VERSION:
            signed = f"{parts[1]}.{payload_b64}"
            key = self._keys.get(parts[1])
            genuine = key is not None and hmac.compare_digest(given, self._mac(key, signed))
        else:
            genuine = any([hmac.compare_digest(given, self._mac(k, payload_b64))
                           for k in self._keys.values()])
        if not genuine:
            raise LinkError("forged", "This link was not issued by this server or has been "
                                      "altered.")
        try:
            payload = json.loads(_unb64(payload_b64))
            claims = LinkClaims(
                org_id=str(payload["o"]), alert_id=str(payload["a"]),
                contact_id=str(payload["r"]), action=payload["x"],
                expires_at=datetime.fromtimestamp(int(payload["e"]), UTC),
                token_id=str(payload["n"]))
        except (ValueError, KeyError, TypeError):
            raise LinkError("malformed", "This link is incomplete or damaged.") from None
        if claims.action != action:
            raise LinkError("wrong_action", f"This is a link to {_describe(claims.action)}, "
                                            f"not to {_describe(action)}.")
        if (now or datetime.now(UTC)) >= claims.expires_at:
            raise LinkError("expired", "This link expired on "
                            f"{claims.expires_at:%Y-%m-%d %H:%M} UTC.")
        return claims


def _describe(action: str) -> str:
    return {"ack": "acknowledge an alert", "view": "view an alert's history"}.get(action, action)


def ack_url(base_url: str, token: str) -> str:
    """``{base_url}/ack/{token}``."""
    return f"{base_url.rstrip('/')}/ack/{token}"


def short_url(base_url: str, org_id: str, code: str) -> str:
    """``{base_url}/a/{org_id}/{code}``: the link messages carry."""
    return f"{base_url.rstrip('/')}/a/{quote(org_id, safe='')}/{code}"


def store_short_link(conn: psycopg.Connection[Any], record: ShortLink) -> None:
    """Store a short link's claims; must run inside the tenant transaction of its
    organization."""
    conn.execute(queries("links")["insert_short_link"], {
        "short_id": record.short_id, "org_id": record.org_id, "alert_id": record.alert_id,
        "contact_id": record.contact_id, "action": record.action,
        "expires_at": record.expires_at, "key_id": record.key_id})


def find_short_link(conn: psycopg.Connection[Any], code: str) -> ShortLink | None:
    """The stored claims of a short link's code (None: malformed or unknown); must run
    inside the tenant transaction of the organization the link names."""
    m = SHORT_CODE.match(code)
    if m is None:
        return None
    row = conn.execute(queries("links")["short_link"], {"short_id": m.group(1)}).fetchone()
    if row is None:
        return None
    return ShortLink(short_id=row[0], org_id=row[1], alert_id=row[2], contact_id=row[3],
                     action=row[4], expires_at=row[5], key_id=row[6])


def alert_url(base_url: str, alert_id: str, token: str) -> str:
    """``{base_url}/alerts/{alert_id}?token={token}`` (the alert id URL-quoted)."""
    return f"{base_url.rstrip('/')}/alerts/{quote(alert_id, safe='')}?token={token}"


def load_secret(settings: Settings, *, demo: bool = False) -> bytes:
    """The link secret: ``ALTAVIZ_LINK_SECRET``, or in the demo a generated one kept on disk.

    The demo's secret lives in ``DATA_DIR/link_secret`` (mode 0600) so that the worker, which
    signs links, and the server, which verifies them, share it across restarts.

    Raises:
        ConfigError: no secret is configured outside the demo, or it is short or predictable.
    """
    if settings.link_secret is not None:
        value = settings.link_secret.get_secret_value().encode()
        check_secret(value, "ALTAVIZ_LINK_SECRET")
        return value
    if not demo:
        raise ConfigError("ALTAVIZ_LINK_SECRET is not set: acknowledgement links cannot be "
                          "signed. Set it to a long random value (e.g. `openssl rand -hex 32`) "
                          "for both the worker and the server, or use --demo for a local demo")
    path = settings.data_dir / DEMO_SECRET_FILE
    return _demo_secret(path)


def _demo_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes().strip()
        try:
            check_secret(value, str(path))
        except ConfigError as exc:
            raise ConfigError(f"{exc}; or delete the file to make a new one") from None
        return value
    value = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def load_previous_secrets(settings: Settings) -> list[bytes]:
    """The keys that still verify links (``ALTAVIZ_LINK_SECRET_PREVIOUS``), after a rotation.

    Raises:
        ConfigError: the previous secret is short or predictable.
    """
    if settings.link_secret_previous is None:
        return []
    value = settings.link_secret_previous.get_secret_value().encode()
    check_secret(value, "ALTAVIZ_LINK_SECRET_PREVIOUS")
    return [value]


def signer_from_settings(settings: Settings, *, demo: bool = False) -> LinkSigner:
    """A :class:`LinkSigner` with the configured secrets and ``link_ttl_hours``."""
    return LinkSigner(load_secret(settings, demo=demo),
                      ttl=timedelta(hours=settings.link_ttl_hours),
                      previous=load_previous_secrets(settings))
