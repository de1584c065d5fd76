"""``altaviz demo``: the newcomer's first run, on the embedded defaults.

Starts the embedded PostgreSQL and Temporal dev server, applies migrations and shows where
everything is. (The simulated fleet, pipeline and alert walkthrough build on this.)
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from altaviz.app import App
from altaviz.settings import mask_url


def register(sub: Any) -> None:
    """Add ``demo``."""
    p = sub.add_parser("demo", help="run the demo on the embedded services",
                       description="Start the embedded services, migrate, and show the demo.")
    p.add_argument("--no-wait", action="store_true",
                   help="exit when done instead of leaving the services running until Ctrl-C")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, app: App) -> int:
    print("starting PostgreSQL ...", flush=True)
    url = app.database_url()
    where = "embedded, data in " + str(app.settings.data_dir.resolve() / "postgres") \
        if app.embedded_postgres else mask_url(url)
    print(f"  PostgreSQL ready ({where}); schema migrated", flush=True)
    print("starting Temporal ...", flush=True)
    address = app.temporal_address()
    print(f"  Temporal ready at {address} (namespace {app.settings.temporal_namespace})",
          flush=True)
    ui = app.temporal_ui_url()
    if ui:
        print(f"  Temporal Web UI: {ui}", flush=True)
    if args.no_wait:
        return 0
    print("services running; press Ctrl-C to stop", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    print("stopping services ...", flush=True)
    return 0
