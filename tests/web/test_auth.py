"""Console sign-in building blocks: argon2 hashes, signed expiring session cookies kept apart
from link tokens, and the failed-sign-in limiter."""

from __future__ import annotations

import time

import pytest

from altaviz.app.web.auth import (
    RateLimiter,
    Session,
    SessionSigner,
    check_password,
    hash_password,
)
from altaviz.core.links import LinkSigner

SECRET = b"auth-test-secret-0123456789abcdefghij"


def test_passwords_are_argon2id_hashes_and_only_the_right_one_matches() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and "correct" not in stored
    assert check_password(stored, "correct horse battery")
    assert not check_password(stored, "correct horse batterY")
    assert not check_password(None, "correct horse battery")     # unknown login
    assert not check_password("not-a-hash", "x")
    with pytest.raises(ValueError, match="at least 10 characters"):
        hash_password("short")


def test_session_cookies_verify_expire_and_are_not_link_tokens() -> None:
    signer = SessionSigner(SECRET)
    cookie = signer.issue(Session("acme", "sam@acme.example", 3))
    assert signer.verify(cookie) == Session("acme", "sam@acme.example", 3)
    # (the last base64 character may carry only padding bits: alter one in the middle)
    mid = len(cookie) // 2
    assert signer.verify(cookie[:mid] + ("A" if cookie[mid] != "A" else "B")
                         + cookie[mid + 1:]) is None
    assert signer.verify(None) is None and signer.verify("garbage") is None
    assert SessionSigner(b"another-secret-0123456789abcdefghijkl").verify(cookie) is None
    # a link token signed with the same secret is not a session
    token = LinkSigner(SECRET).issue(org_id="acme", alert_id="a", contact_id="c", action="ack")
    assert signer.verify(token) is None
    expired = SessionSigner(SECRET, max_age_hours=0)
    stale = expired.issue(Session("acme", "sam@acme.example", 0))
    time.sleep(1.1)
    assert expired.verify(stale) is None
    assert "auth-test-secret" not in repr(signer)


def test_rate_limiter_counts_per_key_in_its_window_and_forgets_expired_keys() -> None:
    limiter = RateLimiter(limit=2, window_s=0.2)
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") >= 1 and limiter.retry_after("b") == 0
    limiter.succeeded("a")
    assert limiter.retry_after("a") == 0
    limiter.MAX_KEYS = 3
    for key in ("k1", "k2", "k3"):
        limiter.failed(key)
    time.sleep(0.25)
    assert limiter.retry_after("k1") == 0           # the window has passed
    limiter.failed("k4")
    assert set(limiter._failures) == {"k4"}
