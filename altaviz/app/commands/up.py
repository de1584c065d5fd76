"""``altaviz up``: run Altaviz as a service until Ctrl-C.

Embedded PostgreSQL and Temporal when none is configured, migrations, the fleet, contacts and
rules loaded, a worker, the acknowledgement server and the hourly pipeline schedule (which picks
up new landing files). Stopping loses nothing: alerts wait on their timers inside Temporal and
resume when Altaviz starts again.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from altaviz.app.commands.doctor import preflight
from altaviz.app.context import App
from altaviz.app.runtime import Runtime, RuntimeOptions, load_reference_data
from altaviz.core.catalog import Catalog
from altaviz.core.contacts import read_contacts
from altaviz.core.fleet_store import read_fleet
from altaviz.core.links import signer_from_settings


def register(sub: Any) -> None:
    """Add ``up``."""
    p = sub.add_parser(
        "up", help="run Altaviz as a service (worker, ack server, hourly pipeline) until Ctrl-C",
        description="Starts (or attaches to) the services, applies migrations, loads the "
                    "fleet, contacts and rules, then runs a worker, the acknowledgement server "
                    "and the hourly pipeline schedule until Ctrl-C. Requires "
                    "ALTAVIZ_LINK_SECRET (links in notifications are signed with it).")
    p.add_argument("--fleet", type=Path, metavar="FILE",
                   help="fleet.json to load (upsert) at start")
    p.add_argument("--contacts", type=Path, metavar="FILE",
                   help="contacts/routing YAML to load at start (default: "
                        "ALTAVIZ_CONTACTS_FILE)")
    p.add_argument("--no-web", action="store_true",
                   help="do not run the acknowledgement server in this process")
    p.set_defaults(handler=_up)


def _up(args: argparse.Namespace, app: App) -> int:
    settings = app.settings
    if not args.no_web:
        signer_from_settings(settings, demo=False)  # refuse to start without a link secret
    # every prerequisite first: nothing is written to a database whose Temporal is unreachable
    preflight(app, web=not args.no_web)
    loaded = _load(app.owner_database_url(), args.fleet, args.contacts or settings.contacts_file,
                   settings.rules_file, settings.catalog)
    print("altaviz up: " + "; ".join(loaded), flush=True)
    app.temporal_address()
    return asyncio.run(_serve(app, runtime_options(args)))


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The runtime ``altaviz up`` runs: the worker with the schedule, and the web server."""
    return RuntimeOptions(schedule=True, web=not args.no_web)


def _load(db_url: str, fleet: Path | None, contacts: Path | None, rules_file: Path,
          catalog: Catalog) -> list[str]:
    fleet_data = read_fleet(fleet, catalog) if fleet is not None else None
    contacts_data = read_contacts(contacts) if contacts is not None else None
    rule_set = load_reference_data(db_url, fleet_data, contacts_data, rules_file, catalog)
    done = []
    if fleet_data is not None:
        done.append(f"fleet: {len(fleet_data.compressors)} compressors")
    if contacts_data is not None:
        done.append(f"contacts: {len(contacts_data.contacts)}")
    done.append(f"rules: v{rule_set.version} ({len(rule_set.rules)} rules)")
    return done


async def _serve(app: App, options: RuntimeOptions) -> int:
    web = options.web
    runtime = Runtime(app, options)
    await runtime.start()
    s = app.settings
    queues = [w.task_queue for w in (runtime.worker, runtime.etl_worker) if w is not None]
    print(f"  workers polling task queues {', '.join(map(repr, queues))}; hourly pipeline "
          f"scheduled (landing folder {s.landing_path})", flush=True)
    if web:
        print(f"  acknowledgement server at http://{s.http_host}:{s.http_port} "
              f"(links use {s.base_url})", flush=True)
    ui = app.temporal_ui_url()
    if ui:
        print(f"  Temporal Web UI: {ui}", flush=True)
    print("running; Ctrl-C to stop", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.request_stop)
    try:
        await runtime.wait()
    finally:
        print("stopping ...", flush=True)
        await runtime.stop()
    return 0
