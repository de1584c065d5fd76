"""Setup that checks itself: the tenant-role trap on a real PostgreSQL 15, ``altaviz doctor``
and ``altaviz up`` refusing to write anything while a prerequisite is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from altaviz.app.cli import main
from altaviz.core import db
from altaviz.core.settings import Settings

BASE = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "k3Jq9vTz0pW7xR2mN8bY4cH6fL1sD5gA"


@pytest.fixture
def trapped_url() -> Iterator[str]:
    """A database owned by a login that is not a member of an existing ``altaviz_app`` (and
    may not grant it): the set-up an operator meets on a shared server."""
    try:
        admin = psycopg.connect(BASE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = f"altaviz_trap_{os.getpid()}"
    login = f"{name}_login"
    with admin:
        admin.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                      "'altaviz_app') THEN CREATE ROLE altaviz_app NOLOGIN; END IF; END $$")
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{login}"')
        admin.execute(f'CREATE ROLE "{login}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{login}"')
    try:
        yield f"postgresql://{login}@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(BASE, autocommit=True) as admin2:
            admin2.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin2.execute(f'DROP ROLE IF EXISTS "{login}"')


@pytest.mark.pg15
def test_migrate_fails_with_the_one_line_fix_and_doctor_reports_it(
        trapped_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    login = psycopg.conninfo.conninfo_to_dict(trapped_url)["user"]
    settings = Settings(database_url=trapped_url, temporal_address="127.0.0.1:9",
                        data_dir=tmp_path, link_secret=SECRET)

    assert main(["db", "migrate"], settings=settings) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"GRANT altaviz_app TO {login} WITH ADMIN OPTION" in lines[0]
    assert "Traceback" not in captured.err and "InsufficientPrivilege" not in captured.err
    # nothing was applied
    with db.connect(trapped_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)

    assert main(["db", "status"], settings=settings) == 1
    assert f"GRANT altaviz_app TO {login}" in capsys.readouterr().out

    assert main(["doctor"], settings=settings) == 1
    out = capsys.readouterr().out
    roles = next(line for line in out.splitlines() if "  roles:" in line)
    assert roles.startswith("FAIL") and f"GRANT altaviz_app TO {login}" in roles
    runtime = next(line for line in out.splitlines() if "runtime login:" in line)
    assert runtime.startswith("FAIL") and "permission denied to set role" in runtime
    assert next(line for line in out.splitlines() if "  database:" in line).startswith("ok")
    temporal = next(line for line in out.splitlines() if "  temporal:" in line)
    assert temporal.startswith("FAIL") and "ALTAVIZ_TEMPORAL_ADDRESS" in temporal

    # the statement the message names is the fix: after it the role check passes
    with psycopg.connect(BASE.rsplit("/", 1)[0] + "/" + trapped_url.rsplit("/", 1)[1],
                         autocommit=True) as admin:
        admin.execute(f'GRANT altaviz_app TO "{login}" WITH ADMIN OPTION')
    try:
        with db.connect(trapped_url, autocommit=True) as conn:
            assert db.app_role_problem(conn) is None
    finally:
        with psycopg.connect(BASE, autocommit=True) as admin:
            admin.execute(f'REVOKE altaviz_app FROM "{login}"')


def test_up_writes_nothing_while_temporal_is_unreachable(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    contacts = tmp_path / "contacts.yaml"
    contacts.write_text("contacts:\n  - org_id: opx\n    contact_id: jo\n    name: Jo\n"
                        "    role: technician\n    apprise_urls: ['json://127.0.0.1:9/x']\n")
    settings = Settings(database_url=db_url, temporal_address="127.0.0.1:9",
                        data_dir=tmp_path, link_secret=SECRET, contacts_file=contacts)
    assert main(["up"], settings=settings) == 1
    captured = capsys.readouterr()
    assert "FAIL  temporal:" in captured.out
    assert "nothing was written" in captured.err
    assert "Traceback" not in captured.err
    with db.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM contacts WHERE org_id = 'opx'"
                            ).fetchone() == (0,)


def test_doctor_names_a_weak_link_secret_and_an_unreachable_public_url(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(database_url=db_url, temporal_address="127.0.0.1:9",
                        data_dir=tmp_path, link_secret="a" * 40,
                        public_url="http://127.0.0.1:9")
    assert main(["doctor"], settings=settings) == 1
    out = capsys.readouterr().out
    secret = next(line for line in out.splitlines() if "link secret:" in line)
    assert secret.startswith("FAIL")
    public = next(line for line in out.splitlines() if "public URL:" in line)
    assert public.startswith("FAIL") and "ALTAVIZ_PUBLIC_URL" in public
    assert next(line for line in out.splitlines() if "row-level security:" in line
                ).startswith("ok")


def test_doctor_and_db_status_report_the_etl_login(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with db.connect(db_url) as conn:
        roles = db.role_names(conn)

    def as_user(role: str) -> str:   # a URL, as the settings want (the test server trusts)
        parts = urlsplit(db_url)
        return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@', 1)[-1]}"))

    etl_url, owner_url, runtime_url = (as_user(roles[k]) for k in ("etl", "owner", "runtime"))

    def run(command: str, etl: str | None) -> tuple[int, list[str]]:
        settings = Settings(database_url=runtime_url, database_owner_url=db_url,
                            etl_database_url=etl, temporal_address="127.0.0.1:9",
                            data_dir=tmp_path, link_secret=SECRET)
        code = main(command.split(), settings=settings)
        return code, capsys.readouterr().out.splitlines()

    _, out = run("doctor", etl_url)
    line = next(x for x in out if "ETL login:" in x)
    assert line.startswith("ok") and f"as {roles['etl']}, neither owner" in line
    assert f"ETL {roles['etl']}, a member of {db.ETL_ROLE} only" in next(
        x for x in out if "  roles:" in x)
    # the owner's URL given as the ETL's is named for what it is
    _, out = run("doctor", owner_url)
    line = next(x for x in out if "ETL login:" in x)
    assert line.startswith("FAIL") and "owns the schema" in line
    _, out = run("doctor", None)
    line = next(x for x in out if "ETL login:" in x)
    assert line.startswith("ok") and "ALTAVIZ_ETL_DATABASE_URL is unset" in line

    code, out = run("db status", etl_url)
    assert code == 0
    shown = {x.split()[1]: x for x in out if x.startswith("role ")}
    assert set(shown) == {"owner", "etl", "runtime"}
    assert f"{roles['etl']}: " in shown["etl"] and f"//{roles['etl']}@" in shown["etl"]
    assert "ETL worker" in shown["etl"] and "migrations" in shown["owner"]
