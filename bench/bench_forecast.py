"""Benchmark what failure forecasting adds to the hourly run, for a fleet-sized organization.

    .venv/bin/python -m bench.bench_forecast [--compressors 4500] [--days 6] [--runs 5]

Starts its own embedded PostgreSQL 18 in a temporary directory and fills it as
bench/bench_rules.py's *latest* part does (every metric of every unit every hour; about 1 unit
in 50 drifts hot, so some forecasts are made). Times, for the latest hour:

* ``rules.forecast.forecast_hour``: what the hourly evaluation adds per organization (read the
  last ``READ_HOURS`` hours of the forecast metrics and speed under row-level security, fit
  every unit and rule, store the forecasts, derive forecast-driven warnings), on a worker's
  first hour (the whole window read) and in its steady state (the inputs kept from the
  previous hour by ``GridCache``, only the new hour read);
* the fitting alone on the grid already in memory (``forecast_grid``);
* the hourly rule evaluation itself, for scale.

The CPU load (``/proc/loadavg``) is printed with every figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from altaviz.app.services import get_embedded_server
from altaviz.core import db
from bench.bench_rules import START, _load, setup
from rules.evaluate import evaluate
from rules.forecast import (
    READ_HOURS,
    GridCache,
    forecast_grid,
    forecast_hour,
    needs_of,
    targets,
)
from rules.loader import load_rule_set
from rules.sources import PostgresSource


def _timed(fn: Any, runs: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def main() -> None:
    """Run the benchmark and print the figures as a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compressors", type=int, default=4500)
    ap.add_argument("--days", type=int, default=6, help="days of aggregates (>= 5)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per figure")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="bench_forecast_"))
    (tmp / "data").mkdir()
    server = get_embedded_server(tmp / "data", cleanup_mode="delete")
    rows: list[str] = []

    def line(what: str, figure: str) -> None:
        rows.append(f"| {what} | {figure} | {_load()} |")
        print(rows[-1], flush=True)

    try:
        url = str(server.get_uri("postgres"))
        db.migrate(url)
        rs = load_rule_set()
        conn = db.connect(url)
        n = args.compressors
        t = time.perf_counter()
        count = setup(conn, "latest", n, args.days)
        line(f"generate {n} units x {args.days} days ({count:,} aggregate rows)",
             f"{time.perf_counter() - t:.1f} s")
        last = START + timedelta(days=args.days) - timedelta(hours=1)
        ev, _ = _timed(lambda: evaluate(conn, rs, "latest", (last, last)), args.runs)
        line(f"rule evaluation, latest hour, {n} units (for scale)",
             f"median {median(ev):.3f} s (runs: {', '.join(f'{x:.3f}' for x in ev)})")
        fh, out = _timed(lambda: forecast_hour(conn, rs, "latest", last), args.runs)
        line(f"forecast_hour, first hour of a worker: read {READ_HOURS} h, fit, store, "
             f"warnings; {n} units, "
             f"{len(out[0])} forecasts",
             f"median {median(fh):.3f} s (runs: {', '.join(f'{x:.3f}' for x in fh)})")
        cache = GridCache()
        forecast_hour(conn, rs, "latest", last - timedelta(hours=1), cache=cache,
                      changed=[last - timedelta(hours=1)])
        fc, out = _timed(lambda: forecast_hour(conn, rs, "latest", last, cache=cache,
                                               changed=[last]), args.runs)
        line(f"forecast_hour, the worker's steady state (inputs kept from the previous hour, "
             f"the new hour read); {n} units, {len(out[0])} forecasts",
             f"median {median(fc):.3f} s (runs: {', '.join(f'{x:.3f}' for x in fc)})")
        with db.tenant(conn, "latest"):
            src = PostgresSource(conn)
            units = src.units("latest", None)
            tgs = targets(rs, units)
            grid = src.grid(units, last - timedelta(hours=READ_HOURS - 1), last, needs_of(tgs))
        fit, _ = _timed(lambda: forecast_grid(grid, tgs, last), args.runs)
        line(f"fitting alone ({len(tgs)} rules x {n} units, grid in memory)",
             f"median {median(fit):.3f} s (runs: {', '.join(f'{x:.3f}' for x in fit)})")
        conn.close()
        print(f"\n### Forecast ({datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, Python "
              f"{platform.python_version()}, embedded PostgreSQL 18, 2 shared cores)\n")
        print("| what | time | load (1/5/15 min) |\n|---|---|---|")
        print("\n".join(rows))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
