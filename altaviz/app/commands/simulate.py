"""``altaviz simulate``: generate a fleet, its telemetry landing files and the ground truth."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from altaviz.core.errors import InputError
from altaviz.simulator import DirtyConfig, FieldConfig, SimulationConfig, simulate


def register(subparsers: Any) -> None:
    """Add the ``simulate`` command."""
    p = subparsers.add_parser(
        "simulate",
        help="generate a simulated fleet's telemetry (with faults, dirty data and ground truth)",
        description=(
            "Write OUT/fleet.json, OUT/ground_truth.json and Parquet landing files under "
            "OUT/landing/<org_id>/arrival_date=YYYY-MM-DD/, at a 10-minute cadence. The fleet "
            "behaves like a field (flow swings at constant speed, hot spells, stuck and dropped "
            "sensors, missing instruments, planned stops, shut-ins), each event recorded in the "
            "ground truth; --calm turns that off. The same seed always gives byte-identical "
            "files."
        ),
    )
    p.add_argument("--compressors", type=int, required=True, metavar="N",
                   help="number of compressors in the fleet (>= 1)")
    p.add_argument("--days", type=int, required=True, metavar="D",
                   help="length of the simulated window in days (>= 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="random seed; same seed, same bytes (default 0)")
    p.add_argument("--start", default="2026-11-02", metavar="DATE",
                   help="window start, ISO date or UTC datetime (default 2026-11-02)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder (created if missing; must not hold a previous run "
                        "unless --overwrite)")
    p.add_argument("--organizations", type=int, default=None, metavar="K",
                   help="number of organizations (tenants); default min(4, N)")
    p.add_argument("--fault-share", type=float, default=0.10, metavar="F",
                   help="share of units that develop a fault, 0-1 (default 0.10)")
    p.add_argument("--clean", action="store_true",
                   help="no data defects (no gaps, late files, duplicates, bad values)")
    p.add_argument("--calm", action="store_true",
                   help="no field behaviour: speed carries the load, flow stays flat, no hot "
                        "spells, stuck or dropped sensors, missing instruments or shut-ins")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous simulation in --out")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=handle)


def parse_start(text: str) -> datetime:
    """Parse ``--start``: an ISO date (midnight UTC) or an ISO datetime (naive = UTC)."""
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--start: cannot parse {text!r} as a date (use YYYY-MM-DD or "
                         "YYYY-MM-DDTHH:MM)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def build_config(args: argparse.Namespace) -> Any:
    """The SimulationConfig for the parsed arguments; InputError names the bad option."""

    start = parse_start(args.start)
    try:
        return SimulationConfig(
            compressors=args.compressors, days=args.days, seed=args.seed, start=start,
            out=args.out, organizations=args.organizations, fault_share=args.fault_share,
            dirty=None if args.clean else DirtyConfig(),
            field=None if args.calm else FieldConfig(), overwrite=args.overwrite,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "arguments"
        option = "--" + field.replace("_", "-")
        raise InputError(f"{option}: {err['msg']} (got {err.get('input')!r})") from None


def handle(args: argparse.Namespace, app: object) -> int:
    """Run the simulation with a progress bar and print a one-line summary."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    config = build_config(args)
    console = Console(stderr=True)
    with Progress(TextColumn("simulating"), BarColumn(), TextColumn("day {task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=console,
                  disable=args.quiet or not console.is_terminal, transient=True) as progress:
        task = progress.add_task("simulate", total=config.days)
        result = simulate(config, progress=lambda done, total: progress.update(task,
                                                                              completed=done))
    truth = result.ground_truth
    failed = sum(1 for f in truth.faults if f.failure is not None)
    print(f"simulated {truth.compressors} compressors x {config.days} days: "
          f"{result.rows_written:,} rows in {len(result.files)} files, "
          f"{len(truth.faults)} faults ({failed} failed), "
          f"{sum(truth.defects.values()) - truth.defects['comm_gaps']:,} defects, "
          f"{len(truth.nuisance_events):,} nuisance events "
          f"-> {result.out} ({result.elapsed_s:.1f} s)")
    return 0
