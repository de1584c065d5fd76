"""Simulator benchmark: 4,500 compressors x 7 days (time) and x 30 days (peak memory).

Run: ``.venv/bin/python -m bench.bench_simulator`` (full size, about a minute on 2 cores) or
``--quick`` (small fleet, seconds); ``--calm`` measures the calm profile instead of the default
field behaviour. Each size runs in its own child process so that its peak
RSS (``ru_maxrss``) is its own. The baseline, measured in the same run, is a naive per-row
Python generator (random.gauss per value, dict rows, one Parquet write) on a small slice,
extrapolated linearly to the full size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from altaviz.core.telemetry import CHANNELS, LANDING_SCHEMA
from altaviz.simulator import SimulationConfig, simulate


def _child(compressors: int, days: int, out: str, profile: str) -> None:
    began = time.perf_counter()
    extra = {"field": None} if profile == "calm" else {}
    result = simulate(SimulationConfig(compressors=compressors, days=days, seed=42, out=Path(out),
                                       **extra))
    elapsed = time.perf_counter() - began
    size = sum(p.stat().st_size for p in result.files)
    print(json.dumps({
        "compressors": compressors, "days": days, "seconds": round(elapsed, 2),
        "readings": result.readings_generated, "rows": result.rows_written,
        "files": len(result.files), "landing_mb": round(size / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def run_size(compressors: int, days: int, profile: str = "field") -> dict[str, float]:
    """Simulate in a child process; returns its timing and peak RSS."""
    out = tempfile.mkdtemp(prefix="altaviz-bench-sim-")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_simulator", "--child",
             str(compressors), str(days), out, profile],
            check=True, capture_output=True, text=True)
        result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def naive_baseline(compressors: int, days: int) -> float:
    """Seconds per reading of a straightforward per-row generator (the design we avoid)."""
    rnd = random.Random(42)
    start = datetime(2026, 11, 2, tzinfo=UTC)
    began = time.perf_counter()
    rows = []
    for unit in range(compressors):
        cid = f"COMP-{unit + 1:04d}"
        for step in range(days * 144):
            ts = start + timedelta(minutes=10 * step)
            hour = (step / 6) % 24
            amb = 60 + 10 * math.cos(2 * math.pi * (hour - 21) / 24) + rnd.gauss(0, 0.3)
            row: dict[str, object] = {"compressor_id": cid, "ts": ts, "arrived_at": ts}
            for c in CHANNELS:
                row[c.name] = round(min(c.high, max(c.low, 0.5 * (c.low + c.high) / 10
                                                    + amb * 0.1 + rnd.gauss(0, 1))), 2)
            rows.append(row)
    out = Path(tempfile.mkdtemp(prefix="altaviz-bench-naive-"))
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=LANDING_SCHEMA), out / "all.parquet")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return (time.perf_counter() - began) / len(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown section for docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--calm", action="store_true",
                        help="the calm profile (no field behaviour)")
    parser.add_argument("--child", nargs=4, metavar=("N", "DAYS", "OUT", "PROFILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(int(args.child[0]), int(args.child[1]), args.child[2], args.child[3])
        return 0
    n = 300 if args.quick else 4500
    profile = "calm" if args.calm else "field"
    week = run_size(n, 7, profile)
    month = run_size(n, 30, profile)
    small = run_size(50, 1, profile)
    per_reading = naive_baseline(50, 1)
    naive_week = per_reading * week["readings"]
    print("## Simulator\n")
    print(f"Machine: {platform.node()} ({os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.machine()}), "
          f"{datetime.now(UTC):%Y-%m-%d}. Command: `.venv/bin/python -m bench.bench_simulator"
          f"{' --quick' if args.quick else ''}{' --calm' if args.calm else ''}`. Default dirty "
          f"data, {'calm profile' if args.calm else 'field behaviour'}, 10% faults, seed 42.\n")
    print("| run | readings | rows written | files | landing MB | seconds | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for label, r in ((f"{n} x 7 days", week), (f"{n} x 30 days", month),
                     ("50 x 1 day (fixed costs)", small)):
        print(f"| {label} | {r['readings']:,} | {r['rows']:,} | {r['files']} | "
              f"{r['landing_mb']} | {r['seconds']} | {r['peak_rss_mb']} |")
    print(f"| baseline: naive per-row generator, 50 x 1 day measured, extrapolated to "
          f"{n} x 7 days | {week['readings']:,} | | 1 | | {naive_week:.0f} (est.) | |")
    print(f"\nVectorized simulator: {week['seconds'] / week['readings'] * 1e6:.2f} us/reading; "
          f"naive per-row: {per_reading * 1e6:.1f} us/reading "
          f"({naive_week / week['seconds']:.0f}x slower). Targets: {n} x 7 days < 15 s; "
          f"x 30 days peak memory < 2 GB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
