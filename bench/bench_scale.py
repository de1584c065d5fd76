"""Fault and scale scenarios of the alert workflows on the embedded Temporal dev server.

``worker-kill``: N alerts (default 100) open and wait on their escalation timers (short delay);
the worker process is killed with SIGKILL; the timers fire with no worker; a new worker
process is started. Every alert must escalate exactly once: ``alert_events`` holds N
'escalated' rows (one per alert) and the escalation notify step ran for every alert.

``two-workers``: N alerts (default 1,000) opened at once and escalated with two worker
processes on one task queue; both must have taken work and nothing may be doubled.

``temporal-restart``: N alerts (default 100) open and wait on their escalation timers; the
embedded dev server is stopped (SIGTERM) and, after ``--down-s`` seconds, started again on the
same state file (``temporal.db``) and port while the worker process keeps running. The worker
must reconnect by itself (same process, no restart), and every alert must escalate exactly
once, no earlier than its delay, with one escalation notification.

Runs in a scratch data directory on free ports:
``.venv/bin/python -m bench.bench_scale worker-kill [--alerts 100 --delay-s 60]``,
``.venv/bin/python -m bench.bench_scale two-workers [--alerts 1000]`` and
``.venv/bin/python -m bench.bench_scale temporal-restart [--alerts 100 --delay-s 75
--down-s 60]``. Workers are real processes (``python -m bench.bench_scale _worker``); the
notify activity is a stand-in that records each call in a table (``bench_notify_calls``),
since delivery is tested elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from workflows.models import NotifyRequest, NotifyResult

HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)
ORG = "scale"
CALLS_TABLE = """CREATE TABLE IF NOT EXISTS bench_notify_calls (
    id bigserial PRIMARY KEY, worker text NOT NULL, alert_id text NOT NULL, step text NOT NULL,
    at timestamptz NOT NULL DEFAULT now())"""


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the worker process ------------------------------------------------------------------

async def run_worker(db_url: str, address: str, task_queue: str, name: str) -> None:
    """A worker with every Altaviz workflow and a recording notify stand-in, until killed."""
    from concurrent.futures import ThreadPoolExecutor

    from psycopg_pool import ConnectionPool
    from temporalio import activity
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from worker import build_worker

    client = await Client.connect(address, data_converter=pydantic_data_converter)

    with ConnectionPool(db_url, min_size=2, max_size=12, open=True) as pool, \
            ThreadPoolExecutor(max_workers=12) as executor:

        @activity.defn(name="notify")
        async def notify(req: NotifyRequest) -> NotifyResult:
            """Record the call (which worker, which alert, which step)."""
            def insert() -> None:
                with pool.connection() as conn:
                    conn.execute("INSERT INTO bench_notify_calls (worker, alert_id, step) "
                                 "VALUES (%s, %s, %s)", [name, req.alert.alert_id, req.step])
            await asyncio.to_thread(insert)
            return NotifyResult(delivered=1)

        worker = build_worker(client, task_queue=task_queue, pool=pool, notify=notify,
                              executor=executor, max_concurrent_activities=12,
                              max_concurrent_workflow_tasks=32)
        print("worker ready", flush=True)
        await worker.run()


def spawn_worker(db_url: str, address: str, task_queue: str, name: str) -> subprocess.Popen[str]:
    """Start a worker process and wait until it polls."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_scale", "_worker", "--db-url", db_url,
         "--address", address, "--task-queue", task_queue, "--name", name],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "worker ready" not in line:
        raise RuntimeError(f"worker {name} did not start: {line!r}")
    return proc


# --- scenarios ---------------------------------------------------------------------------

def count(db_url: str, sql: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


async def wait_count(db_url: str, sql: str, target: int, timeout: float) -> float:
    t0 = time.perf_counter()
    while True:
        n = count(db_url, sql)
        if n >= target:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{sql}: {n} of {target} after {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    from activities.pipeline import start_or_update_alert
    from altaviz.app import App
    from altaviz.fleet import Compressor, Fleet, Organization, Site
    from altaviz.fleet_store import load_fleet
    from altaviz.settings import Settings
    from altaviz.temporal_setup import ensure_search_attributes
    from rules.results import Breach

    data_dir = Path(args.data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    settings = Settings(data_dir=data_dir, temporal_port=port, temporal_ui_port=free_port(),
                        reminder_minutes=0, task_queue=f"scale-{os.getpid()}")
    app = App(settings=settings)
    figures: dict[str, Any] = {"scenario": args.scenario, "alerts": args.alerts,
                               "escalation_delay_s": args.delay_s}
    workers: list[subprocess.Popen[str]] = []
    try:
        db_url = app.database_url()
        address = app.temporal_address()
        client = await app.temporal_client()
        await ensure_search_attributes(client)
        n = args.alerts
        with psycopg.connect(db_url) as conn:
            conn.execute(CALLS_TABLE)
            load_fleet(conn, Fleet(
                organizations=(Organization(org_id=ORG, name="Scale Gas"),),
                sites=(Site(org_id=ORG, site_id="S-01", name="Scale site", basin="Permian"),),
                compressors=tuple(Compressor(
                    org_id=ORG, compressor_id=f"C-{i:05d}", site_id="S-01", model="Ariel JGK/4",
                    driver="Caterpillar G3516B", rated_hp=1380, rated_rpm=1400, stages=3)
                    for i in range(n))))
        names = ["w1", "w2"] if args.scenario == "two-workers" else ["w1"]
        workers = [spawn_worker(db_url, address, settings.task_queue, w) for w in names]
        delay_h = args.delay_s / 3600
        breaches = [Breach(org_id=ORG, compressor_id=f"C-{i:05d}", site_id="S-01",
                           rule_id="discharge_temp_high", metric="discharge_temp_max_f",
                           value=335.0, threshold=330, severity="warning", hour=HOUR,
                           rule_version=1, escalation_delay_hours=delay_h) for i in range(n)]
        sem = asyncio.Semaphore(32)

        async def one(b: Breach) -> None:
            async with sem:
                await start_or_update_alert(client, b, task_queue=settings.task_queue,
                                            reminder_minutes=0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in breaches))
        figures["signalled_s"] = round(time.perf_counter() - t0, 1)
        await wait_count(db_url, "SELECT count(*) FROM alert_history", n, 900)
        await wait_count(db_url, "SELECT count(DISTINCT alert_id) FROM bench_notify_calls "
                         "WHERE step = 'opened'", n, 900)
        figures["opened_s"] = round(time.perf_counter() - t0, 1)
        if args.scenario == "temporal-restart":
            await restart_server(args, settings, db_url, figures, t0)
        if args.scenario == "worker-kill":
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            killed_at = time.perf_counter()
            figures["escalated_before_kill"] = count(
                db_url, "SELECT count(*) FROM alert_events WHERE event_type = 'escalated'")
            # let every timer fire while no worker runs, then start a fresh worker
            await asyncio.sleep(max(0.0, args.delay_s - (killed_at - t0)) + 5)
            figures["worker_down_s"] = round(time.perf_counter() - killed_at, 1)
            workers.append(spawn_worker(db_url, address, settings.task_queue, "w2"))
        await wait_count(db_url, "SELECT count(*) FROM alert_events WHERE event_type = "
                         "'escalated'", n, 900 + args.delay_s)
        figures["all_escalated_s"] = round(time.perf_counter() - t0, 1)
        await asyncio.sleep(args.settle_s)  # anything doubled would show up by now
        figures["alerts"] = count(db_url, "SELECT count(*) FROM alert_history")
        figures["escalated_events"] = count(
            db_url, "SELECT count(*) FROM alert_events WHERE event_type = 'escalated'")
        figures["escalated_alerts"] = count(
            db_url, "SELECT count(DISTINCT alert_id) FROM alert_events "
            "WHERE event_type = 'escalated'")
        figures["critical_alerts"] = count(
            db_url, "SELECT count(*) FROM alert_history WHERE severity = 'critical'")
        figures["notify_calls_by_step"] = dict(psycopg.connect(db_url).execute(
            "SELECT step, count(*) FROM bench_notify_calls GROUP BY 1").fetchall())
        figures["notify_escalated_alerts"] = count(
            db_url, "SELECT count(DISTINCT alert_id) FROM bench_notify_calls "
            "WHERE step = 'escalated'")
        figures["notify_calls_by_alert_step_max"] = count(
            db_url, "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM "
            "bench_notify_calls GROUP BY alert_id, step) c")
        figures["escalated_before_delay"] = count(
            db_url, "SELECT count(*) FROM alert_history WHERE escalated_at < opened_at + "
            "make_interval(secs => escalation_delay_hours * 3600)")
        figures["workers_alive"] = sum(1 for w in workers if w.poll() is None)
        figures["notify_calls_by_worker"] = dict(psycopg.connect(db_url).execute(
            "SELECT worker, count(*) FROM bench_notify_calls GROUP BY 1").fetchall())
        figures["duplicate_event_keys"] = count(
            db_url, "SELECT count(*) FROM (SELECT alert_id, event_type, count(*) FROM "
            "alert_events GROUP BY 1, 2 HAVING count(*) > 1 AND event_type <> "
            "'breach_repeated') d")
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
        app.close()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return figures


async def restart_server(args: argparse.Namespace, settings: Any, db_url: str,
                         figures: dict[str, Any], t0: float) -> None:
    """Stop the embedded dev server, keep it down ``args.down_s``, start it again on the same
    state file and port; the worker process is left alone."""
    from altaviz.services import EmbeddedTemporal
    from workflows import SEARCH_ATTRIBUTES

    server = EmbeddedTemporal(settings.data_dir, port=settings.temporal_port,
                              ui_port=settings.temporal_ui_port,
                              namespace=settings.temporal_namespace,
                              search_attributes=SEARCH_ATTRIBUTES)
    figures["escalated_before_stop"] = count(
        db_url, "SELECT count(*) FROM alert_events WHERE event_type = 'escalated'")
    s0 = time.perf_counter()
    old = server.running()
    assert server.stop(), "the dev server was not running"
    figures["stop_s"] = round(time.perf_counter() - s0, 1)
    figures["stopped_at_s"] = round(time.perf_counter() - t0, 1)
    await asyncio.sleep(args.down_s)
    s1 = time.perf_counter()
    info = server.start()
    figures["server_start_s"] = round(time.perf_counter() - s1, 1)
    figures["restarted_at_s"] = round(time.perf_counter() - t0, 1)
    figures["same_port"] = old is not None and info.port == old.port
    figures["timers_due_while_down"] = count(
        db_url, "SELECT count(*) FROM alert_history WHERE opened_at + "
        "make_interval(secs => escalation_delay_hours * 3600) < now()")
    # the first escalation after the restart shows the worker is polling again
    await wait_count(db_url, "SELECT count(*) FROM alert_events WHERE event_type = "
                     "'escalated'", figures["escalated_before_stop"] + 1, 300 + args.delay_s)
    figures["first_escalation_after_restart_s"] = round(time.perf_counter() - s1, 1)


def check(f: dict[str, Any]) -> list[str]:
    """The invariants; an empty list when every one holds."""
    n = f["alerts"]
    problems = []
    for key in ("escalated_events", "escalated_alerts", "critical_alerts",
                "notify_escalated_alerts"):
        if f[key] != n:
            problems.append(f"{key} = {f[key]} (expected {n})")
    if f["duplicate_event_keys"]:
        problems.append(f"{f['duplicate_event_keys']} duplicated (alert, event) pairs")
    if f["notify_calls_by_alert_step_max"] > 1:
        problems.append("a notification step ran twice for one alert")
    if f["escalated_before_delay"]:
        problems.append(f"{f['escalated_before_delay']} alerts escalated before their delay")
    if f["scenario"] == "temporal-restart":
        if f["workers_alive"] != 1 or len(f["notify_calls_by_worker"]) != 1:
            problems.append("the worker process did not survive the server restart alone")
        if f["escalated_before_stop"]:
            problems.append("timers fired before the server was stopped (raise --delay-s)")
        if not f["same_port"]:
            problems.append("the dev server came back on another port")
    if f["scenario"] == "two-workers" and len(f["notify_calls_by_worker"]) < 2:
        problems.append(f"one worker took all the work: {f['notify_calls_by_worker']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario",
                        choices=["worker-kill", "two-workers", "temporal-restart", "_worker"])
    parser.add_argument("--alerts", type=int, default=None, help="alerts opened at once")
    parser.add_argument("--delay-s", type=float, default=None,
                        help="escalation delay in seconds (worker-kill: 60, two-workers: 90, "
                             "temporal-restart: 75)")
    parser.add_argument("--down-s", type=float, default=60.0,
                        help="temporal-restart: seconds the dev server stays stopped")
    parser.add_argument("--settle-s", type=float, default=10.0,
                        help="wait this long after the last escalation before counting")
    parser.add_argument("--data-dir", default=f"/tmp/altaviz-bench-scale-{os.getpid()}",
                        help="scratch data directory (deleted afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--task-queue", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario == "_worker":
        asyncio.run(run_worker(args.db_url, args.address, args.task_queue, args.name))
        return 0
    args.alerts = args.alerts or (1000 if args.scenario == "two-workers" else 100)
    args.delay_s = args.delay_s or {"worker-kill": 60.0, "two-workers": 90.0,
                                    "temporal-restart": 75.0}[args.scenario]
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    t0 = time.perf_counter()
    figures = asyncio.run(scenario(args))
    figures["total_s"] = round(time.perf_counter() - t0, 1)
    problems = check(figures)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}")
    print(json.dumps(figures, indent=1, default=str))
    print("OK" if not problems else "FAILED: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
