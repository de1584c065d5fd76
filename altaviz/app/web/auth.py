"""Console sign-in: argon2 passwords, signed session cookies and a sign-in rate limit.

A session is a signed, timestamped cookie (itsdangerous) naming the person's organization,
login and session epoch; the server keeps no session table. Every request checks the epoch
against ``console_users``, so signing out or deactivating a person ends every one of their
sessions at once, and the signature's age limits a stolen cookie's life.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "altaviz_session"
SESSION_HOURS = 12
MIN_PASSWORD = 10

_hasher = PasswordHasher()
#: Verified when the login is unknown, so a wrong login costs the same time as a wrong password
#: (the answer's timing does not tell which logins exist).
_DUMMY_HASH = _hasher.hash("altaviz-no-such-user")


def hash_password(password: str) -> str:
    """The argon2id hash to store (never the password).

    Raises:
        ValueError: the password is shorter than :data:`MIN_PASSWORD` characters.
    """
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a console password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def check_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored hash (always spends one argon2 verification)."""
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether the hash was made with weaker parameters than today's defaults."""
    return _hasher.check_needs_rehash(stored)


@dataclass(frozen=True)
class Session:
    """Who a valid cookie says is signed in."""

    org_id: str
    login: str
    epoch: int


class SessionSigner:
    """Signs and verifies session cookies with a key of their own.

    Args:
        secret: the server's secret (the link secret); the cookie key is derived from it with
            its own label, so a link token can never pass for a session or the reverse.
        max_age_hours: how long a session lasts after sign-in.
    """

    def __init__(self, secret: bytes, max_age_hours: int = SESSION_HOURS) -> None:
        key = hmac.new(secret, b"altaviz console session v1", hashlib.sha256).digest()
        self._serializer = URLSafeTimedSerializer(key, salt="console-session")
        self._form_key = hmac.new(secret, b"altaviz console form v1", hashlib.sha256).digest()
        #: the key of one-time sign-in links (:mod:`altaviz.app.web.sign_in_link`)
        self.link_key = hmac.new(secret, b"altaviz console sign-in link v1",
                                 hashlib.sha256).digest()
        self.max_age = max_age_hours * 3600

    def __repr__(self) -> str:
        return f"SessionSigner(max_age={self.max_age})"

    def issue(self, session: Session) -> str:
        return self._serializer.dumps([session.org_id, session.login, session.epoch])

    def form_token(self, cookie: str) -> str:
        """The hidden field every console form that changes something carries: bound to the
        session cookie, so another site cannot post one (on top of SameSite=Lax)."""
        return hmac.new(self._form_key, cookie.encode(), hashlib.sha256).hexdigest()[:32]

    def form_ok(self, cookie: str | None, token: str) -> bool:
        """Whether a posted form's token belongs to the signed-in person's cookie."""
        return bool(cookie) and hmac.compare_digest(self.form_token(cookie or ""), token)

    def verify(self, cookie: str | None) -> Session | None:
        """The session of a valid, unexpired cookie, else None."""
        if not cookie:
            return None
        try:
            org_id, login, epoch = self._serializer.loads(cookie, max_age=self.max_age)
        except (BadSignature, ValueError, TypeError):
            return None
        if not (isinstance(org_id, str) and isinstance(login, str) and isinstance(epoch, int)):
            return None
        return Session(org_id, login, epoch)


class RateLimiter:
    """At most ``limit`` failed sign-ins per key (a login, a client address) per window.

    Kept in the server's memory: it slows down guessing against one server process, which is
    what it is for; a restart forgets it.
    """

    #: Keys kept at most; beyond it, keys whose failures have all expired are forgotten, so a
    #: stream of made-up logins cannot grow the server's memory without bound.
    MAX_KEYS = 10_000

    def __init__(self, limit: int = 5, window_s: float = 900.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def retry_after(self, key: str) -> int:
        """Seconds until the key may try again (0: allowed now)."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(key, now)
            wait = self.window_s - (now - q[0]) if len(q) >= self.limit else 0.0
        return int(wait) + (1 if wait else 0)

    def failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._failures) > self.MAX_KEYS:
                for stale in [k for k, q in self._failures.items()
                              if not q or now - q[-1] > self.window_s]:
                    del self._failures[stale]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
