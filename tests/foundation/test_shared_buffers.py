"""The embedded server's start-time settings (shared_buffers): applied on a fresh data folder
(initdb, then one restart) and on a stopped one (written before the start)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from altaviz.app.services import (
    get_embedded_server,
    shared_buffers_for,
    start_settings,
    write_start_settings,
)

GB = 1024 ** 3


def test_size_is_capped_and_never_below_the_default() -> None:
    assert shared_buffers_for(24 * GB) == "1GB"
    assert shared_buffers_for(4 * GB) == "512MB"
    assert shared_buffers_for(512 * 1024 ** 2) == "128MB"
    assert shared_buffers_for(None) == "128MB"


def _shown(server: object) -> str:
    with psycopg.connect(server.get_uri("postgres")) as conn:  # type: ignore[attr-defined]
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row is not None
    return str(row[0])


def test_fresh_and_restarted_servers_run_with_the_setting(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    want = start_settings()["shared_buffers"]
    server = get_embedded_server(pgdata, cleanup_mode="stop")
    try:
        assert _shown(server) == want            # fresh folder: initdb, then a restart
    finally:
        server.cleanup()
    # Stopped with another value on disk (as an older Altaviz left it): written before start.
    write_start_settings(pgdata, {"shared_buffers": "64MB"})
    assert "shared_buffers = '64MB'" in (pgdata / "postgresql.auto.conf").read_text()
    server = get_embedded_server(pgdata, cleanup_mode="delete")
    try:
        assert _shown(server) == want
        text = (pgdata / "postgresql.auto.conf").read_text()
        assert text.count("shared_buffers") == 1 and "ALTER SYSTEM" in text
    finally:
        server.cleanup()
