"""``altaviz contacts``: load the contacts/routing file into PostgreSQL, list who gets what."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from altaviz.app.context import App
from altaviz.core.contacts import load_contacts, read_contacts, url_scheme
from altaviz.core.db import queries, tenant
from altaviz.core.errors import InputError


def register(sub: Any) -> None:
    """Add ``contacts load`` and ``contacts list``."""
    parser = sub.add_parser("contacts", help="who is notified about which site's alerts",
                            description="Contacts and routing: technicians get their sites' "
                                        "warnings, supervisors also get escalations.")
    c_sub = parser.add_subparsers(dest="contacts_command", metavar="ACTION", required=True)
    p = c_sub.add_parser("load", help="store a contacts file (YAML); contacts no longer listed "
                                      "for an organization are deactivated")
    p.add_argument("file", type=Path, nargs="?",
                   help="contacts file (default: ALTAVIZ_CONTACTS_FILE)")
    p.set_defaults(handler=_load)
    p = c_sub.add_parser("list", help="list an organization's contacts (URL schemes only)")
    p.add_argument("--org", required=True, help="organization id")
    p.set_defaults(handler=_list)


def _load(args: argparse.Namespace, app: App) -> int:
    path = args.file or app.settings.contacts_file
    if path is None:
        raise InputError("no contacts file given: pass FILE or set ALTAVIZ_CONTACTS_FILE")
    parsed = read_contacts(path)
    with app.connect() as conn:
        counts = load_contacts(conn, parsed)
    print(f"loaded {counts['contacts']} contacts of {counts['organizations']} organization(s) "
          f"from {path}; {counts['deactivated']} deactivated")
    return 0


def _list(args: argparse.Namespace, app: App) -> int:
    with app.connect() as conn, tenant(conn, args.org):
        rows = conn.execute(queries("notify")["list_contacts"]).fetchall()
    for _org, cid, name, role, sites, urls, active in rows:
        channels = ", ".join(url_scheme(u) for u in urls)
        print(f"{cid:<20} {role:<10} {'active' if active else 'inactive':<8} "
              f"sites={','.join(sites) or '*'}  {name}  [{channels}]")
    if not rows:
        print(f"no contacts for {args.org}")
    return 0
