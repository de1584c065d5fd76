"""The Temporal dev server stopped and restarted on its state file mid-run while the worker
process keeps running (``bench.bench_scale temporal-restart``, which checks the invariants and
prints the figures): alerts waiting on their escalation timers survive, the worker reconnects
by itself, and each alert escalates exactly once, no earlier than its delay, with one
escalation notification.

Fast (CI): 10 alerts, 15 s escalation delay, server down 5 s (the timers fire after the
restart). Slow: 100 alerts, 75 s delay, server down 60 s (timers fall due while it is down).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float) -> str:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_scale", "temporal-restart", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    print(proc.stdout)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_dev_server_restart_keeps_timers_and_worker_reconnects(tmp_path: Path) -> None:
    out = _bench("--alerts", "10", "--delay-s", "15", "--down-s", "5", "--settle-s", "3",
                 "--data-dir", str(tmp_path / "data"), timeout=300)
    assert '"escalated_events": 10' in out and '"workers_alive": 1' in out


@pytest.mark.slow
def test_dev_server_down_a_minute_with_100_alerts_waiting(tmp_path: Path) -> None:
    out = _bench("--alerts", "100", "--delay-s", "75", "--down-s", "60",
                 "--data-dir", str(tmp_path / "data"), timeout=1200)
    assert '"escalated_events": 100' in out and '"workers_alive": 1' in out
