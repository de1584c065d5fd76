"""Signed one-click links: acknowledge an alert, or view its history, without an account.

A token names one organization, one alert, one recipient (contact) and one action, carries its
own expiry and a random id, and is signed with HMAC-SHA256 under the server secret. Because the
signature covers every field, changing any of them (another alert, another recipient, "view"
turned into "ack", a later expiry) invalidates the link; the database never stores tokens, only
the ids of used ones (table ``link_tokens_used``), which is what makes an ack link single-use.

Format: ``v1.<payload>.<signature>``, both parts base64url without padding; the payload is
compact JSON, so an SMS link stays around 200 characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from altaviz.core.errors import ConfigError, TerminalError
from altaviz.core.settings import Settings

Action = Literal["ack", "view"]
ACTIONS: tuple[Action, ...] = ("ack", "view")
_VERSION = "v1"
_DOMAIN = b"altaviz-link-v1."   # separates link signatures from any other use of the secret
MIN_SECRET_BYTES = 16
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Issues and verifies link tokens under one secret.

    Args:
        secret: the server secret (``ALTAVIZ_LINK_SECRET``), at least 16 bytes.
        ttl: how long issued links stay valid.
    """

    def __init__(self, secret: bytes, ttl: timedelta = timedelta(hours=72)) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the link secret must be at least {MIN_SECRET_BYTES} bytes long")
        self._secret = secret
        self.ttl = ttl

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a log line
        return f"LinkSigner(ttl={self.ttl})"

    def _sign(self, payload_b64: str) -> bytes:
        return hmac.new(self._secret, _DOMAIN + payload_b64.encode("ascii"),
                        hashlib.sha256).digest()

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
        return f"{_VERSION}.{payload_b64}.{_b64(self._sign(payload_b64))}"

    def verify(self, token: str, *, action: Action, now: datetime | None = None) -> LinkClaims:
        """The claims of a genuine, unexpired token for ``action``.

        The signature is checked (timing-safe) before anything in the payload is trusted.

        Raises:
            LinkError: malformed, forged or altered, expired, or made for another action.
        """
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or len(token) > 2048:
            raise LinkError("malformed", "This link is incomplete or damaged.")
        try:
            given = _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise LinkError("malformed", "This link is incomplete or damaged.") from None
        if not hmac.compare_digest(given, self._sign(parts[1])):
            raise LinkError("forged", "This link was not issued by this server or has been "
                                      "altered.")
        try:
            payload = json.loads(_unb64(parts[1]))
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


def alert_url(base_url: str, alert_id: str, token: str) -> str:
    """``{base_url}/alerts/{alert_id}?token={token}`` (the alert id URL-quoted)."""
    return f"{base_url.rstrip('/')}/alerts/{quote(alert_id, safe='')}?token={token}"


def load_secret(settings: Settings, *, demo: bool = False) -> bytes:
    """The link secret: ``ALTAVIZ_LINK_SECRET``, or in the demo a generated one kept on disk.

    The demo's secret lives in ``DATA_DIR/link_secret`` (mode 0600) so that the worker, which
    signs links, and the server, which verifies them, share it across restarts.

    Raises:
        ConfigError: no secret is configured outside the demo, or it is too short.
    """
    if settings.link_secret is not None:
        value = settings.link_secret.get_secret_value().encode()
        if len(value) < MIN_SECRET_BYTES:
            raise ConfigError(f"ALTAVIZ_LINK_SECRET must be at least {MIN_SECRET_BYTES} "
                              "characters long (e.g. `openssl rand -hex 32`)")
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
        if len(value) < MIN_SECRET_BYTES:
            raise ConfigError(f"{path} holds no usable link secret: delete it to make a new "
                              "one") from None
        return value
    value = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def signer_from_settings(settings: Settings, *, demo: bool = False) -> LinkSigner:
    """A :class:`LinkSigner` with the configured secret and ``link_ttl_hours``."""
    return LinkSigner(load_secret(settings, demo=demo),
                      ttl=timedelta(hours=settings.link_ttl_hours))
