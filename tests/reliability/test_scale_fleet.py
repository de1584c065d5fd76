"""The fleet-scale scenario at a small size: a simulated fleet caught up one arrival day per ETL
run (each in its own process), the default rules replayed over the whole month and evaluated
for the latest hour, then the counts that must agree. The full size (4,500 compressors x 30
days) is the same code: ``.venv/bin/python -m bench.bench_scale fleet-30d`` (see
docs/BENCHMARKS.md, "Scale", for its figures).

Run: ``.venv/bin/pytest -m slow tests/reliability/test_scale_fleet.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_small_fleet_month_day_by_day_through_etl_and_rules(tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_scale", "fleet-30d", "--compressors", "50",
         "--days", "30", "--work", str(work), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    print(proc.stdout[-5000:])
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    f = json.loads((work / "summary.json").read_text())

    # one run per arrival day (30 reading days plus the late files of the day after), each ok
    days = f["etl_days"]
    assert len(days) == f["arrival_days"] >= 30
    assert [d["day"] for d in days] == sorted(d["day"] for d in days)
    assert all(d["ok"] for d in days), [d for d in days if not d["ok"]]
    # each day brought its own files (bronze never reloads the earlier days' ones)
    assert all(d["files"] == d["landing_files"] for d in days)
    assert all(d["rows_in"] > 0 and d["peak_rss_mb"] > 0 for d in days)
    assert sum(d["agg_rows_upserted"] for d in days) >= f["integrity"]["agg_rows"]

    i = f["integrity"]
    assert i["bronze_rows"] == i["silver_rows"] + i["quarantine_rows"] + i["duplicates_dropped"]
    assert i["bronze_rows"] == sum(d["rows_in"] for d in days)
    assert i["quarantine_rows"] == sum(d["rows_quarantined"] for d in days)
    assert i["agg_rows"] == i["gold_distinct_keys"] == i["gold_rows"] > 0
    assert i["silver_duplicate_keys"] == i["agg_duplicate_keys"] == 0
    assert i["etl_runs_by_status"] == {"succeeded": len(days)}

    # the rules ran over the whole month and found the simulator's faults
    bt, latest = f["rules_backtest"], f["rules_latest"]
    assert bt["ok"] and latest["ok"]
    assert bt["alerts"] > 0 and bt["report"]["faults"] > 0
    assert bt["last_hour"] == latest["last_hour"]
    span = datetime.fromisoformat(bt["last_hour"]) - datetime.fromisoformat(bt["first_hour"])
    assert timedelta(days=f["days"] - 1) <= span < timedelta(days=f["days"] + 1)
