"""Measure the failure forecasts against the simulator's ground truth over several seeds.

    .venv/bin/python -m bench.bench_forecast_accuracy --seeds 21,22,23,24,25 \\
        [--compressors 200] [--days 30] [--work /tmp/fc-data] \\
        [--postgres postgresql://postgres@127.0.0.1:5432]

For each seed S (in its own folder WORK/sS and database fc_sS on the given PostgreSQL, created
if missing) it runs, as an operator would, `altaviz simulate --compressors N --days D --seed S`,
`altaviz fleet load`, `altaviz etl run` (skipped when WORK/sS/READY exists), then the
forecast scoring of `altaviz rules backtest rules/thresholds.yaml --ground-truth` over the
whole window (rules/forecast_backtest.py). It prints each seed's table and the figures pooled
over every seed's faults (medians are taken over the pooled faults, not averaged), per point
(the first alert's open, 24 h later) and fault mode, next to the naive baseline.

The seeds the forecast's constants were chosen on (rules/forecast.py: window, t-value, band
factors) are not the ones reported in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from altaviz.core import db
from rules.backtest import backtest, load_ground_truth
from rules.forecast_backtest import (
    POINTS,
    PointForecast,
    group_scores,
    score_forecasts,
)
from rules.loader import load_rule_set

START = datetime(2026, 11, 2, tzinfo=UTC)


def _build(seed: int, work: Path, url: str, compressors: int, days: int) -> None:
    """Simulate, load and run the ETL for one seed (once)."""
    folder = work / f"s{seed}"
    if (folder / "READY").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ALTAVIZ_DATA_DIR": str(folder), "ALTAVIZ_DATABASE_URL": url}
    exe = str(Path(sys.executable).with_name("altaviz"))
    sim = folder / "sim"
    for cmd in ([exe, "simulate", "--compressors", str(compressors), "--days", str(days),
                 "--seed", str(seed), "--out", str(sim), "--quiet", "--overwrite"],
                [exe, "db", "migrate"], [exe, "fleet", "load", str(sim / "fleet.json")],
                [exe, "etl", "run", "--landing", str(sim / "landing"), "--quiet"]):
        subprocess.run(cmd, env=env, check=True)
    (folder / "READY").touch()


def main() -> None:
    """Build what is missing, score every seed, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", required=True, help="comma-separated simulator seeds")
    ap.add_argument("--compressors", type=int, default=200)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fc-data"))
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                    help="a PostgreSQL server whose superuser may create the databases")
    args = ap.parse_args()
    rs = load_rule_set()
    end = START + timedelta(days=args.days) - timedelta(hours=1)
    pooled: list[PointForecast] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        name = f"fc_s{seed}"
        with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             [name]).fetchone() is None:
                admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{args.postgres}/{name}"
        _build(seed, args.work, url, args.compressors, args.days)
        folder = args.work / f"s{seed}"
        truth = load_ground_truth(folder / "sim" / "ground_truth.json")
        gold = str(folder / "lake" / "gold")
        with db.connect(url) as conn:
            report = backtest(conn, rs, db.org_ids(conn), START, end, truth.faults,
                              exclude_rules=tuple(r.id for r in rs.rules if r.kind == "no_data"),
                              gold_uri=gold, nuisance=truth.nuisance)
            fr = score_forecasts(conn, rs, report, gold_uri=gold)
        pooled += fr.points
        _table(f"seed {seed}", fr.points)
    _table(f"pooled over seeds {args.seeds}", pooled)


def _table(title: str, points: list[PointForecast]) -> None:
    def h(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} h"

    print(f"\n#### {title}\n")
    print("| point | fault mode | faults | with forecast | median abs. error | in 80% band | "
          "naive: with forecast | naive: median abs. error | faults both forecast: model / naive "
          "median abs. error |\n|---|---|---|---|---|---|---|---|---|")
    for point, _ in POINTS:
        for mode, sc in group_scores([p for p in points if p.point == point]).items():
            band = "-" if sc.inside_band is None else f"{100 * sc.inside_band:.0f}%"
            print(f"| {point} | {mode} | {sc.faults} | {sc.with_forecast} | "
                  f"{h(sc.median_abs_error_h)} | {band} | {sc.naive_with_forecast} | "
                  f"{h(sc.naive_median_abs_error_h)} | {h(sc.same_faults_median_abs_error_h)} / "
                  f"{h(sc.naive_same_faults_median_abs_error_h)} |", flush=True)


if __name__ == "__main__":
    main()
