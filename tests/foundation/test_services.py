"""Embedded services: two Altaviz processes started at once share one PostgreSQL and one
Temporal dev server; state survives a restart; the last process out stops them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from altaviz.core.db import tenant

ATTACH = """
import json, sys
from altaviz.app.context import App
app = App()
url = app.database_url()
info = app.temporal()
import psycopg
with psycopg.connect(url) as c:
    pg_started, user = c.execute("SELECT pg_postmaster_start_time()::text, current_user"
                                 ).fetchone()
print(json.dumps({"url": url, "pg_started": pg_started, "user": user, "temporal_pid": info.pid,
                  "address": info.address, "ui": info.ui_url}), flush=True)
sys.stdin.readline()
app.close()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", ATTACH], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_share_one_postgres_and_one_temporal(tmp_path: Path) -> None:
    env = {**os.environ, "ALTAVIZ_DATA_DIR": str(tmp_path / "data"),
           "ALTAVIZ_TEMPORAL_PORT": str(_free_port()),
           "ALTAVIZ_TEMPORAL_UI_PORT": str(_free_port())}
    procs = [_start(env), _start(env)]
    try:
        infos = []
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line, p.stderr.read() if p.stderr else ""
            infos.append(json.loads(line))
        assert infos[0]["pg_started"] == infos[1]["pg_started"]
        # both log in as the runtime login, with its password, never as the superuser
        assert infos[0]["user"] == infos[1]["user"] == "altaviz_runtime"
        assert infos[0]["temporal_pid"] == infos[1]["temporal_pid"]
        assert infos[0]["ui"].endswith(env["ALTAVIZ_TEMPORAL_UI_PORT"])
        state_file = tmp_path / "data" / "temporal" / "temporal.db"
        assert state_file.exists()
        # Both attached: the first to leave stops nothing.
        first, second = procs
        assert first.stdin is not None and second.stdin is not None
        first.stdin.write("\n")
        first.stdin.flush()
        first.wait(timeout=60)
        with psycopg.connect(infos[1]["url"]) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert _alive(infos[1]["temporal_pid"])
        # The last one out stops both.
        second.stdin.write("\n")
        second.stdin.flush()
        second.wait(timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(infos[1]["temporal_pid"]):
            time.sleep(0.2)
        assert not _alive(infos[1]["temporal_pid"])
        pg_pid = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0]) \
            if (tmp_path / "data" / "postgres" / "postmaster.pid").exists() else None
        assert pg_pid is None or not _alive(pg_pid)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=30)


def test_postgres_state_survives_a_restart(tmp_path: Path) -> None:
    from altaviz.app.context import App
    from altaviz.core.settings import load_settings

    settings = load_settings(environ={"ALTAVIZ_DATA_DIR": str(tmp_path / "data")})
    app = App(settings=settings)
    with app.connect_owner() as c, c.transaction():
        c.execute("INSERT INTO organizations (org_id, name) VALUES ('keep', 'Kept')")
    app.close()
    app2 = App(settings=settings)
    try:
        with app2.connect() as c, tenant(c, "keep"):
            assert c.execute("SELECT name FROM organizations").fetchone() == ("Kept",)
    finally:
        app2.close()


def test_embedded_postgres_asks_every_role_for_its_password(tmp_path: Path) -> None:
    from altaviz.app.context import App
    from altaviz.core.settings import load_settings

    app = App(settings=load_settings(environ={"ALTAVIZ_DATA_DIR": str(tmp_path / "data")}))
    try:
        runtime: dict[str, Any] = conninfo_to_dict(app.database_url())
        owner = conninfo_to_dict(app.owner_database_url())
        etl = conninfo_to_dict(app.etl_database_url())
        assert (runtime["user"], owner["user"], etl["user"]) == (
            "altaviz_runtime", "altaviz_owner", "altaviz_etl")
        with psycopg.connect(make_conninfo("", **runtime)) as c:
            assert c.execute("SELECT current_user").fetchone() == ("altaviz_runtime",)
        with psycopg.connect(make_conninfo("", **etl)) as c:
            assert c.execute("SELECT current_user").fetchone() == ("altaviz_etl",)
        for user in ("postgres", "altaviz_owner", "altaviz_runtime", "altaviz_etl"):
            for password in ("", "wrong"):
                with pytest.raises(psycopg.OperationalError, match="password"):
                    psycopg.connect(make_conninfo("", **{**runtime, "user": user,
                                                     "password": password}))
        mode = (tmp_path / "data" / "postgres.passwords.json").stat().st_mode & 0o777
        assert mode == 0o600
    finally:
        app.close()


def test_configured_database_url_starts_nothing(tmp_path: Path, db_url: str) -> None:
    from altaviz.app.context import App
    from altaviz.core.settings import load_settings

    settings = load_settings(environ={"ALTAVIZ_DATA_DIR": str(tmp_path / "data"),
                                      "ALTAVIZ_DATABASE_URL": db_url,
                                      "ALTAVIZ_TEMPORAL_ADDRESS": "127.0.0.1:1"})
    app = App(settings=settings)
    assert app.database_url() == db_url
    assert app.temporal_address() == "127.0.0.1:1"
    assert app.temporal_ui_url() is None
    app.close()
    assert not (tmp_path / "data" / "postgres").exists()
    assert not (tmp_path / "data" / "temporal").exists()


@pytest.mark.parametrize("command", [["services", "status"], ["--help"]])
def test_cli_reports_services(tmp_path: Path, command: list[str]) -> None:
    env = {**os.environ, "ALTAVIZ_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-m", "altaviz.app.cli", *command], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    if command[0] == "services":
        assert "PostgreSQL: embedded, not running" in out.stdout
        assert "Temporal:   embedded dev server not running" in out.stdout
    else:
        for cmd in ("db", "services", "fleet"):
            assert f"    {cmd}" in out.stdout


def test_services_start_keeps_them_up_until_stop(tmp_path: Path) -> None:
    env = {**os.environ, "ALTAVIZ_DATA_DIR": str(tmp_path / "data"),
           "ALTAVIZ_TEMPORAL_PORT": str(_free_port()),
           "ALTAVIZ_TEMPORAL_UI_PORT": str(_free_port())}

    def altaviz(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "altaviz.app.cli", *args], capture_output=True,
                             text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    try:
        assert "stay up until" in altaviz("services", "start")
        altaviz("db", "status")  # another process attaches and leaves: nothing stops
        status = altaviz("services", "status")
        assert "PostgreSQL: embedded, running" in status
        assert "embedded dev server running" in status
    finally:
        assert "Temporal dev server, PostgreSQL" in altaviz("services", "stop")
    status = altaviz("services", "status")
    assert "not running" in status.splitlines()[0] and "not running" in status.splitlines()[1]
