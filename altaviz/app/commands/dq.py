"""``altaviz dq``: data-quality checks recorded by the ETL, per organization and compressor."""

from __future__ import annotations

import argparse
import json
from typing import Any

from altaviz.app.context import App
from altaviz.core.db import admin, queries, tenant
from etl.quality import prune_quality_checks


def register(sub: Any) -> None:
    """Add ``dq report`` and ``dq prune``."""
    parser = sub.add_parser("dq", help="data-quality checks (freshness, completeness, ...)",
                            description="Latest data-quality checks recorded by `altaviz etl`.")
    d_sub = parser.add_subparsers(dest="dq_command", metavar="ACTION", required=True)
    p = d_sub.add_parser("report", help="latest check per compressor and check type")
    p.add_argument("--org", metavar="ORG_ID",
                   help="only this organization (read through its row-level security)")
    p.add_argument("--failed", action="store_true", help="only failed checks")
    p.set_defaults(handler=_report)
    p = d_sub.add_parser(
        "prune", help="delete old checks (each compressor's latest of each kind is kept)",
        description="Delete data-quality checks older than --keep-days. Every hourly ETL run "
                    "records four checks per compressor; this is their retention. The latest "
                    "check of each kind per compressor is kept whatever its age.")
    p.add_argument("--keep-days", type=int, default=30, metavar="DAYS",
                   help="keep this many days of checks (default 30)")
    p.set_defaults(handler=_prune)


def _report(args: argparse.Namespace, app: App) -> int:
    from rich.console import Console
    from rich.table import Table

    sql = queries("etl")["quality_summary"]
    # every organization at once is an operator's read, as the owner
    with app.connect() if args.org else app.connect_owner() as conn:
        scope = tenant(conn, args.org) if args.org else admin(conn)
        with scope:
            rows = conn.execute(sql).fetchall()
    if args.failed:
        rows = [r for r in rows if not r[5]]
    table = Table(title="data quality (latest check per compressor)")
    for col in ("org", "compressor", "check", "measured", "threshold", "ok", "details",
                "checked at"):
        table.add_column(col)
    units = {"freshness": " min", "completeness": "", "consistency": "", "accuracy": ""}
    for org, comp, kind, measured, threshold, passed, details, checked in rows:
        shown = f"{measured:.1f}{units[kind]}" if kind == "freshness" else f"{measured:.2%}"
        limit = f"{threshold:.0f}{units[kind]}" if kind == "freshness" else f"{threshold:.0%}"
        table.add_row(org, comp, kind, shown, limit,
                      "[green]yes[/]" if passed else "[red]NO[/]",
                      json.dumps(details, default=str)[:60], checked.strftime("%Y-%m-%d %H:%M"))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped or captured: never truncate ids
    console.print(table)
    failed = sum(1 for r in rows if not r[5])
    print(f"{len(rows)} checks, {failed} failed")
    return 0


def _prune(args: argparse.Namespace, app: App) -> int:
    with app.connect_owner() as conn:
        deleted = prune_quality_checks(conn, args.keep_days)
    print(f"deleted {deleted} data-quality checks older than {args.keep_days} days")
    return 0
