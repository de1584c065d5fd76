"""Running rule statements on several PostgreSQL connections at once.

One PostgreSQL statement runs on one core (its own parallel workers only cover the scans and
partial aggregates). The backtest splits its hour range and the latest-hour evaluation splits
its units across connections, each in its own tenant transaction, so both cores work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from altaviz.core import db

T = TypeVar("T")


def in_parallel(conns: Sequence[psycopg.Connection[Any]],
                jobs: list[Callable[[psycopg.Connection[Any]], T]]) -> list[T]:
    """Run job i on connection i (threads: psycopg releases the GIL while the server works)."""
    if len(jobs) == 1:
        return [jobs[0](conns[0])]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job, c) for job, c in zip(jobs, conns, strict=False)]
        return [f.result() for f in futures]


def extra_connections(conn: psycopg.Connection[Any], n: int) -> list[psycopg.Connection[Any]]:
    """``n`` more connections to ``conn``'s database as ``conn``'s role (the caller closes
    them)."""
    return [db.connect(conn.info.dsn, password=conn.info.password or None) for _ in range(n)]
