"""Precision benchmark: a rule file scored against several field-like simulated fleets.

Run: ``.venv/bin/python -m bench.bench_precision`` (5 seeds x 200 compressors x 30 days, the
default rules; about a minute per seed to simulate and load, seconds to backtest) with
``--rules FILE`` for another rule file, ``--seeds 1,2,3``, ``--compressors``, ``--days`` and
``--work DIR`` (kept between runs: each seed's simulated fleet, lake and embedded database are
made once, so a rule change is re-scored in seconds). Each seed runs through the product's
own commands: ``altaviz simulate`` (field behaviour and nuisance events on), ``fleet load``,
``etl run``, then ``rules backtest --ground-truth --json`` over the whole window.

Prints, per seed and as mean and worst seed: faults caught >= 72 h before failure (per fault
mode and all), median lead, false alerts per 100 healthy compressor-days, notices by kind
(data missing, stuck sensor, sensor offline, unit stopped; counted apart from false alerts),
and false alerts raised in nuisance events by kind.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from statistics import mean
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ALTAVIZ = str(Path(sys.executable).with_name("altaviz"))
START = date(2026, 11, 2)


def _run(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run([ALTAVIZ, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"altaviz {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def seed_report(work: Path, seed: int, compressors: int, days: int, rules: str) -> dict[str, Any]:
    """One seed's backtest figures (simulating and loading the fleet the first time)."""
    d = work / f"seed{seed}-{compressors}x{days}"
    env = dict(os.environ, ALTAVIZ_DATA_DIR=str(d / "data"))
    if not (d / "READY").exists():
        d.mkdir(parents=True, exist_ok=True)
        _run(["simulate", "--compressors", str(compressors), "--days", str(days), "--seed",
              str(seed), "--start", START.isoformat(), "--out", str(d / "out"), "--quiet",
              "--overwrite"], env)
        _run(["fleet", "load", str(d / "out" / "fleet.json")], env)
        _run(["etl", "run", "--landing", str(d / "out" / "landing")], env)
        (d / "READY").touch()
    end = START + timedelta(days=days - 1)
    text = _run(["rules", "backtest", rules, "--from", START.isoformat(), "--to",
                 f"{end.isoformat()}T23:00", "--ground-truth",
                 str(d / "out" / "ground_truth.json"), "--json"], env)
    report: dict[str, Any] = json.loads(text)
    return report


def _notice_groups(report: dict[str, Any]) -> dict[str, int]:
    """A seed's notices by what they tell (every ``*_stuck`` rule is one group, every
    ``*_offline`` rule another)."""
    out: dict[str, int] = {}
    for rule, n in report["data_notices_by_rule"].items():
        group = "stuck sensor" if rule.endswith("_stuck") else \
            "sensor offline" if rule.endswith("_offline") else rule.replace("_", " ")
        out[group] = out.get(group, 0) + n
    return out


def _share(n: int, of: int) -> float:
    return n / of if of else 1.0


def summarize(reports: dict[int, dict[str, Any]]) -> list[str]:
    """Mean and worst seed of every figure, as lines of text."""
    lines: list[str] = []
    modes = [*sorted({m for r in reports.values() for m in r["scores"]} - {"all"}), "all"]
    lines.append(f"{'fault mode':<18} {'faults':>7} {'>=72 h mean':>11} {'worst':>7} "
                 f"{'median lead mean':>16} {'worst':>7}")
    for mode in modes:
        sc = [r["scores"][mode] for r in reports.values() if mode in r["scores"]]
        early = [_share(s["caught_early"], s["faults"]) for s in sc]
        leads = [s["median_lead_hours"] for s in sc if s["median_lead_hours"] is not None]
        lines.append(f"{mode:<18} {sum(s['faults'] for s in sc):>7} {mean(early):>11.1%} "
                     f"{min(early):>7.1%} {mean(leads) if leads else 0:>15.0f}h "
                     f"{min(leads) if leads else 0:>6.0f}h")
    rates = [r["false_alerts_per_100_compressor_days"] for r in reports.values()]
    lines.append(f"false alerts per 100 healthy compressor-days: mean {mean(rates):.2f}, "
                 f"worst {max(rates):.2f}")
    notices = [r["data_notices"] / r["healthy_compressor_days"] * 100 for r in reports.values()]
    lines.append(f"notices (data quality, unit stopped) per 100 healthy compressor-days: mean "
                 f"{mean(notices):.2f}, worst {max(notices):.2f}")
    for group in sorted({g for r in reports.values() for g in _notice_groups(r)}):
        n = [_notice_groups(r).get(group, 0) for r in reports.values()]
        lines.append(f"  {group}: mean {mean(n):.1f}, worst {max(n)}")
    kinds = sorted({k for r in reports.values() for k in r["nuisance_alerts"]})
    for kind in kinds:
        counts = [r["nuisance_alerts"].get(kind, 0) for r in reports.values()]
        rules = sorted({rule for r in reports.values()
                        for rule in r["nuisance_alerts_by_rule"].get(kind, {})})
        lines.append(f"false alerts in {kind}: mean {mean(counts):.1f}, worst {max(counts)} "
                     f"({', '.join(rules)})")
    after = [r["alerts_after_failure"] for r in reports.values()]
    lines.append(f"alerts after a unit had failed: mean {mean(after):.1f}, worst {max(after)}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default="rules/thresholds.yaml")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--compressors", type=int, default=200)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path("/tmp/altaviz-bench-precision"))
    ap.add_argument("--json", action="store_true", help="print every seed's report as JSON")
    args = ap.parse_args()
    reports: dict[int, dict[str, Any]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        r = seed_report(args.work, seed, args.compressors, args.days, args.rules)
        reports[seed] = r
        a = r["scores"]["all"]
        print(f"seed {seed}: {a['faults']} faults, {a['caught']} caught, {a['caught_early']} "
              f">= 72 h, median lead {a['median_lead_hours'] or 0:.0f} h; "
              f"{r['false_alerts']} false alerts = "
              f"{r['false_alerts_per_100_compressor_days']:.2f} per 100 healthy "
              f"compressor-days; notices: " + ", ".join(
                  f"{g} {n}" for g, n in sorted(_notice_groups(r).items())), flush=True)
    print("\n".join(summarize(reports)))
    if args.json:
        print(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
