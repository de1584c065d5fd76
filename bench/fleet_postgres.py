"""The benchmarks' own embedded PostgreSQL: started, tuned as ``altaviz`` tunes its embedded
server, migrated and loaded with a simulated fleet, then cleaned up on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg

from altaviz.app.services import import_embedded_postgres, tune_embedded_postgres
from altaviz.core import db
from altaviz.core.fleet_store import load_fleet, read_fleet


@contextlib.contextmanager
def fleet_postgres(pgdata: Path, fleet_json: Path, *, cleanup_mode: str) -> Iterator[str]:
    """Yield the admin URL of a PostgreSQL in ``pgdata`` holding the fleet of ``fleet_json``.

    Args:
        pgdata: the data folder (reused when it exists: loading the fleet is idempotent).
        fleet_json: a simulator's ``fleet.json``.
        cleanup_mode: embedded-postgres's ``"stop"`` (keep the data) or ``"delete"``.
    """
    server = import_embedded_postgres().get_server(pgdata, cleanup_mode=cleanup_mode)
    try:
        url = str(server.get_uri("postgres"))
        with psycopg.connect(url, autocommit=True) as admin:
            tune_embedded_postgres(admin)
        db.migrate(url)
        with db.connect(url) as conn:
            load_fleet(conn, read_fleet(fleet_json))
        yield url
    finally:
        server.cleanup()
