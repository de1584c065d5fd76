"""``altaviz fleet``: load a fleet file (organizations, sites, compressors) into PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from altaviz.app.context import App
from altaviz.core.fleet_store import load_fleet, read_fleet


def register(sub: Any) -> None:
    """Add ``fleet load``."""
    parser = sub.add_parser("fleet", help="load organizations, sites and compressors",
                            description="The fleet: who owns which compressor where.")
    f_sub = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    p = f_sub.add_parser("load", help="upsert a fleet.json (as written by `altaviz simulate`)")
    p.add_argument("file", type=Path, help="path to fleet.json")
    p.set_defaults(handler=_load)


def _load(args: argparse.Namespace, app: App) -> int:
    fleet = read_fleet(args.file, app.settings.catalog)
    with app.connect_owner() as conn:
        counts = load_fleet(conn, fleet)
    print(f"loaded {counts['organizations']} organizations, {counts['sites']} sites, "
          f"{counts['compressors']} compressors from {args.file}")
    return 0
