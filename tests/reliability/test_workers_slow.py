"""Slow scenarios on the embedded dev server with real worker processes (see bench/bench_scale.py
for what each does and the invariants it checks): a worker SIGKILLed while 100 alerts wait on
their escalation timers, and 1,000 alerts shared by two workers on one task queue.

Run: ``.venv/bin/pytest -m slow tests/reliability``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float) -> str:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_scale", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    print(proc.stdout)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_worker_sigkill_while_100_alerts_wait_escalates_each_exactly_once(
        tmp_path: Path) -> None:
    _bench("worker-kill", "--alerts", "100", "--delay-s", "60",
           "--data-dir", str(tmp_path / "data"), timeout=1200)


@pytest.mark.slow
def test_1000_alerts_two_workers_one_queue_no_duplicates(tmp_path: Path) -> None:
    _bench("two-workers", "--alerts", "1000", "--delay-s", "120",
           "--data-dir", str(tmp_path / "data"), timeout=2400)
