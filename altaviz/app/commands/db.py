"""``altaviz db``: apply and inspect schema migrations."""

from __future__ import annotations

import argparse
from typing import Any

from altaviz.app.context import App
from altaviz.core.db import app_role_problem, connect, migrate, migration_status, role_names
from altaviz.core.settings import mask_url


def register(sub: Any) -> None:
    """Add ``db migrate`` and ``db status``."""
    parser = sub.add_parser("db", help="apply or inspect database migrations",
                            description="Schema migrations (numbered SQL files in sql/migrations).")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = db_sub.add_parser("migrate", help="apply pending migrations (re-running is a no-op)")
    p.set_defaults(handler=_migrate)
    p = db_sub.add_parser("status", help="list applied and pending migrations (and whether "
                                         "the login may act as the tenant role)")
    p.set_defaults(handler=_status)


def _migrate(args: argparse.Namespace, app: App) -> int:
    url = app.owner_database_url(migrate=False)
    applied = migrate(url)
    where = "embedded PostgreSQL" if app.embedded_postgres else mask_url(url)
    if applied:
        for m in applied:
            print(f"applied {m.path.name}")
        print(f"{len(applied)} migration(s) applied to {where}")
    else:
        print(f"database is up to date ({where})")
    return 0


def _status(args: argparse.Namespace, app: App) -> int:
    url = app.owner_database_url(migrate=False)
    status = migration_status(url)
    for version, name, applied_at in status.applied:
        print(f"applied  {version:03d}_{name}  {applied_at}")
    for m in status.pending:
        print(f"pending  {m.path.name}")
    for m in status.changed:
        print(f"CHANGED  {m.path.name}: the file differs from the applied version")
    print(f"{len(status.applied)} applied, {len(status.pending)} pending")
    with connect(url, autocommit=True) as conn:
        problem = app_role_problem(conn)
        roles = role_names(conn)
    for kind, used_by in (("owner", "migrations, fleet loading"),
                          ("etl", "altaviz etl run, the ETL worker"),
                          ("runtime", "worker, web server, CLI")):
        print(f"role     {kind:<8} {roles.get(kind, '(not created yet)')}: {used_by}; "
              f"{_login_of(app, kind)}")
    if problem is not None:
        print(f"PROBLEM  {problem}")
    return 1 if status.changed or problem else 0


def _login_of(app: App, kind: str) -> str:
    """Which URL logs in as the role of ``kind``, as the settings say (without starting or
    migrating anything)."""
    if app.embedded_postgres:
        return "embedded PostgreSQL, with its own password"
    s = app.settings
    url = {"owner": s.database_owner_url or s.database_url,
           "etl": s.etl_database_url, "runtime": s.database_url}[kind]
    if url is None:
        return ("ALTAVIZ_ETL_DATABASE_URL unset: the ETL logs in with the owner's URL"
                if kind == "etl" else "unset")
    return f"URL {mask_url(url)}"
