"""Helpers of the reliability suite: fresh databases inside hypothesis examples (function-scoped
fixtures cannot be re-created per example), free ports, subprocess environments."""

from __future__ import annotations

import os
import socket
from typing import Any

from altaviz import db
from altaviz.fleet_store import load_fleet
from tests.conftest import _fresh_database, two_tenant_fleet


def fresh_fleet_db(pg_server: Any, pg_template: str) -> str:
    """A new migrated database holding the two-tenant fleet; returns its URL."""
    url = _fresh_database(pg_server, pg_template)
    with db.connect(url) as conn:
        load_fleet(conn, two_tenant_fleet())
    return url


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without any ALTAVIZ_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTAVIZ_")}
    env.update(extra)
    return env
