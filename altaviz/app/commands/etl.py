"""``altaviz etl``: run the medallion ETL and maintain its Delta tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from altaviz.app.context import App
from altaviz.core import db, duck
from altaviz.core.errors import InputError
from etl.aggregates import fleet_compressors
from etl.lake import Lake
from etl.maintenance import maintain
from etl.migrate import migrate_lake, tables_to_migrate
from etl.pipeline import STAGES, run_pipeline


def register(sub: Any) -> None:
    """Add ``etl run``, ``etl maintain`` and ``etl migrate``."""
    parser = sub.add_parser(
        "etl", help="load landing files into the lake and hourly aggregates",
        description="Landing files -> Delta bronze/silver/gold -> PostgreSQL hourly aggregates "
                    "and data-quality checks. Idempotent: re-running loads nothing twice.")
    e_sub = parser.add_subparsers(dest="etl_command", metavar="ACTION", required=True)
    p = e_sub.add_parser("run", help="load new landing files and upsert the hours they touch")
    p.add_argument("--landing", type=Path, metavar="DIR",
                   help="landing folder (default: ALTAVIZ_LANDING_DIR or DATA_DIR/landing)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress display, only the one-line summary")
    p.set_defaults(handler=_run)
    p = e_sub.add_parser("maintain",
                         help="compact small files, checkpoint and vacuum old files")
    p.add_argument("--retention-hours", type=int, default=168, metavar="H",
                   help="delete files unreferenced for longer than H hours (default 168)")
    p.set_defaults(handler=_maintain)
    p = e_sub.add_parser(
        "migrate", help="give a lake written before organization keys its org_id columns",
        description="Rewrite silver and gold tables that have no org_id column, each row "
                    "taking the organization of its compressor from the fleet (an id exactly "
                    "one organization holds). The ETL does the same on its first run; this "
                    "does it ahead of time, and takes --assign for ids the fleet cannot "
                    "place. A lake that is already keyed is left as it is.")
    p.add_argument("--assign", action="append", default=[], metavar="COMPRESSOR=ORG",
                   help="the organization of a compressor id two organizations (or none) "
                        "hold; repeatable")
    p.set_defaults(handler=_migrate)


def _run(args: argparse.Namespace, app: App) -> int:
    settings = app.settings
    db_url = app.etl_database_url()
    if args.quiet or not sys.stderr.isatty():
        summary = run_pipeline(settings, db_url, landing=args.landing)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<11}"), BarColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            tasks: dict[str, Any] = {s: bar.add_task(s, total=1.0) for s in STAGES}

            def progress(stage: str, fraction: float) -> None:
                bar.update(tasks[stage], completed=fraction)

            summary = run_pipeline(settings, db_url, landing=args.landing, progress=progress)
    print(summary.line())
    return 0


def _migrate(args: argparse.Namespace, app: App) -> int:
    assign: dict[str, str] = {}
    for item in args.assign:
        comp, sep, org = item.partition("=")
        if not sep or not comp or not org:
            raise InputError(f"--assign {item!r}: expected COMPRESSOR=ORG")
        assign[comp] = org
    lake = Lake(app.settings.lake_path)
    if not lake.root.exists() or not tables_to_migrate(lake):
        print(f"{lake.root}: already keyed by organization; nothing to do")
        return 0
    with lake.writer_lock(), db.connect(app.owner_database_url()) as conn:
        con = duck.connect(temp_directory=lake.root / "_tmp",
                           memory_limit=f"{app.settings.etl_memory_mb}MB",
                           threads=app.settings.etl_threads)
        try:
            done = migrate_lake(con, lake, fleet_compressors(conn), assign)
        finally:
            con.close()
    for t in done:
        print(f"{t.table:<7} rewritten with org_id: {t.rows} rows, batch mark {t.batch_mark}")
    return 0


def _maintain(args: argparse.Namespace, app: App) -> int:
    for t in maintain(app.settings.lake_path, retention_hours=args.retention_hours):
        print(f"{t.table:<11} compacted {t.files_removed} files into {t.files_added}, "
              f"vacuumed {t.vacuumed} files, now at version {t.version}")
    return 0
