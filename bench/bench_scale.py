"""Fault and scale scenarios: alert workflows on the dev server, the fleet through ETL and rules.

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

``fleet-30d``: the fleet at full size (default 4,500 compressors x 30 days, seed 42; the
simulated files are cached in ``--work``) through the ETL and the rules, on its own embedded
PostgreSQL (tuned like ``altaviz``'s). The landing files are fed the way an operator catching
up would: in arrival order, one arrival day per ``run_pipeline`` call, each call in its own
process so its peak RSS is its own (per day: wall and CPU seconds, peak RSS, rows in,
quarantined, duplicates, aggregate rows written, and the database server's summed RSS). Then
the default rules (``rules/thresholds.yaml``) are replayed over the whole range with
``rules.backtest.backtest`` and the latest hour is evaluated once, each in its own process.
Last, the counts that must agree: bronze rows = silver + quarantine + duplicates, no
duplicate key in silver, gold or ``sensor_readings_agg``, one aggregate row per distinct
gold key, every ``etl_runs`` row succeeded. Figures are saved to ``WORK/summary.json`` after
every step (a run stopped early keeps what it did) and printed as JSON and as a table:
``.venv/bin/python -m bench.bench_scale fleet-30d [--compressors 4500 --days 30
--work /tmp/altaviz-scale-30d --max-days N --keep]``.

The alert scenarios run in a scratch data directory on free ports:
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
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from activities.pipeline import start_or_update_alert
from altaviz.app.context import App
from altaviz.app.services import EmbeddedTemporal
from altaviz.app.temporal_setup import ensure_search_attributes
from altaviz.core import db, duck
from altaviz.core.fleet import Compressor, Fleet, Organization, Site
from altaviz.core.fleet_store import load_fleet
from altaviz.core.payloads import (
    Breach,
    DeliveryOutcome,
    DeliveryPlan,
    DeliveryTarget,
    NotifyRequest,
    NotifyResult,
    PlannedContact,
)
from altaviz.core.settings import Settings
from altaviz.simulator import SimulationConfig, simulate
from bench.fleet_postgres import fleet_postgres
from etl.lake import Lake
from etl.pipeline import run_pipeline
from rules.backtest import backtest, read_ground_truth
from rules.evaluate import evaluate
from rules.loader import load_rule_set
from worker import build_worker
from workflows import SEARCH_ATTRIBUTES

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

    from temporalio import activity
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    client = await Client.connect(address, data_converter=pydantic_data_converter)

    with db.connection_pool(db_url, min_size=2, max_size=12) as pool, \
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

        @activity.defn(name="plan_notification")
        async def plan_notification(req: NotifyRequest) -> DeliveryPlan:
            """Record the step as ``notify`` does; one recipient, delivered by ``deliver``."""
            await notify(req)
            return DeliveryPlan(recipients=[PlannedContact(
                contact_id="bench", role="technician", channels=["bench"])])

        @activity.defn(name="deliver")
        async def deliver(target: DeliveryTarget) -> DeliveryOutcome:
            """Deliver nothing, successfully."""
            return DeliveryOutcome()

        worker = build_worker(client, task_queue=task_queue, pool=pool,
                              notify=[notify, plan_notification, deliver],
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
        # the benchmark's own table, fleet and counts need the owner; its stand-in workers
        # write to that table too, so they use the owner's URL as well
        db_url = app.owner_database_url()
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


# --- the fleet at full size: the ETL one arrival day at a time, then the rules -------------

FLEET_SEED = 42
ROOT = Path(__file__).resolve().parent.parent
#: Exit code of an ETL day child that found ``WORK/stop`` and ran nothing.
STOPPED = 3


def simulate_fleet(work: Path, compressors: int, days: int) -> Path:
    """The simulated fleet (seed fixed), cached in ``work/sim-CxD`` across runs."""
    sim = work / f"sim-{compressors}x{days}"
    if (sim / "ground_truth.json").exists():
        return sim

    # calm profile: the ETL quarantines a reading with a null required channel, which field
    # behaviour (dropouts, missing instruments) produces
    simulate(SimulationConfig(compressors=compressors, days=days, seed=FLEET_SEED, out=sim,
                              overwrite=True, field=None))
    return sim


def arrival_days(sim: Path) -> list[tuple[str, list[Path]]]:
    """Landing files grouped by arrival date, in arrival order (names start with the time)."""
    days: dict[str, list[Path]] = {}
    for folder in (sim / "landing").glob("**/arrival_date=*"):   # flat or per organization
        days.setdefault(folder.name.split("=", 1)[1], []).extend(folder.glob("*.parquet"))
    return [(day, sorted(files, key=lambda p: p.name)) for day, files in sorted(days.items())]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def etl_day_child(db_url: str, landing: Path, lake: Path, as_of: datetime) -> None:
    """One ``run_pipeline`` call over whatever the landing folder holds that bronze has not
    seen (one arrival day); prints its figures as one JSON line. Runs in its own process so
    ``ru_maxrss`` is this run's peak alone."""

    if (landing.parent / "stop").exists():
        # a long catch-up cut short between two days: the parent goes on to the rules and the
        # checks over the days done, and ``--resume`` continues later
        print(f"stopped: {landing.parent / 'stop'} exists", file=sys.stderr)
        sys.exit(STOPPED)
    settings = Settings(data_dir=lake.parent, lake_dir=lake, landing_dir=landing,
                        late_arrival_minutes=90)
    marks: dict[str, float] = {}
    stages: dict[str, float] = {}
    rss: dict[str, float] = {}   # the process's peak RSS when each stage ended: which one grew it
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu_seconds()

    def progress(stage: str, fraction: float) -> None:
        if fraction == 0.0:
            marks[stage] = time.perf_counter()
        elif fraction == 1.0 and stage in marks:
            stages[stage] = round(time.perf_counter() - marks[stage], 2)
            rss[stage] = _peak_rss_mb()

    summary = run_pipeline(settings, db_url, progress=progress, as_of=as_of)
    print(json.dumps({
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round(_cpu_seconds() - c0, 2),
        "peak_rss_mb": _peak_rss_mb(), "stages": stages, "peak_rss_mb_after_stage": rss,
        "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "files": summary.files, "rows_in": summary.rows_in,
        "rows_quarantined": summary.rows_quarantined, "duplicates": summary.duplicates,
        "rows_late": summary.rows_late, "agg_rows_upserted": summary.hours_upserted,
        "changed_ranges": len(summary.changed), "run_id": summary.run_id}))


def rules_child(db_url: str, mode: str, sim: Path, gold_uri: str | None = None) -> None:
    """The default rules over the stored aggregates, as one JSON line: ``backtest`` replays the
    whole range (episodes = alerts it would have raised, faults caught against the simulator's
    ground truth); ``latest`` evaluates the latest hour once, as the hourly pipeline does.
    ``gold_uri``: backtest reading the gold table (``altaviz rules backtest``'s default when a
    lake exists) instead of PostgreSQL."""

    rule_set = load_rule_set()  # rules/thresholds.yaml
    tuning = Settings()         # the parallelism defaults on this machine, as the worker's
    load_before = os.getloadavg()[0]
    with db.connect(db_url) as conn:
        orgs = db.org_ids(conn)
        with db.admin(conn):
            row = conn.execute("SELECT min(hour), max(hour) FROM sensor_readings_agg").fetchone()
        assert row is not None and row[0] is not None, "no aggregates to evaluate"
        first, last = row[0], row[1]
        t0, c0 = time.perf_counter(), _cpu_seconds()
        out: dict[str, Any] = {"mode": mode, "orgs": len(orgs), "first_hour": first.isoformat(),
                               "last_hour": last.isoformat()}
        if mode == "backtest":
            report = backtest(conn, rule_set, orgs, first, last,
                              read_ground_truth(sim / "ground_truth.json"),
                              exclude_rules=tuple(r.id for r in rule_set.rules
                                                  if r.kind == "no_data"), gold_uri=gold_uri,
                              threads=tuning.rules_threads)
            out["engine"] = "duckdb" if gold_uri else "postgres"
            out["alerts"] = len(report.episodes)
            out["report"] = report.summary()
        else:
            breaches = clears = 0
            for org in orgs:
                res = evaluate(conn, rule_set, org, (last, last), threads=tuning.rules_threads)
                breaches += len(res.breaches)
                clears += len(res.clears)
            out.update(breaches=breaches, clears=clears)
    out.update(seconds=round(time.perf_counter() - t0, 2),
               cpu_seconds=round(_cpu_seconds() - c0, 2), peak_rss_mb=_peak_rss_mb(),
               load_1m=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    print(json.dumps(out, default=str))


class TreeMemory:
    """Samples (every second, in a thread) the summed RSS of a process and its children: the
    embedded PostgreSQL server's memory, which the ETL and rules processes' own peak RSS does
    not include. The sum counts shared buffers once per backend that touched them, so it is
    an upper bound."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(1.0):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def take(self) -> float:
        """The peak since the last call, in MB (and start a new period)."""
        peak, self.peak = self.peak, 0
        return round(peak / 2**20, 1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _child_json(*args: str) -> dict[str, Any]:
    """Run ``python -m bench.bench_scale ARGS`` and return its last stdout line as JSON; on
    failure ``{"ok": False, "error": the stderr tail}``."""
    proc = subprocess.run([sys.executable, "-m", "bench.bench_scale", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "stopped": proc.returncode == STOPPED,
                "returncode": proc.returncode, "error": proc.stderr[-3000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["ok"] = True
    return result


def integrity(db_url: str, lake_root: Path, duplicates: int) -> dict[str, Any]:
    """Counts that must agree after the catch-up: the lake's bronze rows are accounted for,
    nothing is doubled in silver or gold, and PostgreSQL holds one aggregate row per gold key."""

    lake = Lake(lake_root)
    con = duck.connect(temp_directory=lake_root / "_tmp")
    try:
        def one(q: str) -> int:
            row = con.execute(q).fetchone()
            return int(row[0]) if row else 0

        scan = {t: f"delta_scan('{lake.uri(t)}')" for t in
                ("bronze", "silver", "quarantine", "gold")}
        f: dict[str, Any] = {
            "bronze_rows": one(f"SELECT count(*) FROM {scan['bronze']}"),
            "silver_rows": one(f"SELECT count(*) FROM {scan['silver']}"),
            "quarantine_rows": one(f"SELECT count(*) FROM {scan['quarantine']}"),
            "duplicates_dropped": duplicates,
            "silver_duplicate_keys": one(
                f"SELECT count(*) - count(DISTINCT (compressor_id, ts)) FROM {scan['silver']}"),
            "gold_rows": one(f"SELECT count(*) FROM {scan['gold']}"),
            "gold_distinct_keys": one(
                f"SELECT count(*) FROM (SELECT DISTINCT org_id, compressor_id, metric, hour "
                f"FROM {scan['gold']})"),
        }
    finally:
        con.close()
    with db.connect(db_url) as conn, db.admin(conn):
        row = conn.execute("SELECT count(*) FROM sensor_readings_agg").fetchone()
        f["agg_rows"] = int(row[0]) if row else 0
        # the primary key makes duplicates impossible; counted anyway, per organization
        row = conn.execute(
            "SELECT coalesce(sum(n - k), 0) FROM (SELECT org_id, count(*) AS n, count(DISTINCT "
            "(compressor_id, metric, hour)) AS k FROM sensor_readings_agg GROUP BY 1) d"
        ).fetchone()
        f["agg_duplicate_keys"] = int(row[0]) if row else 0
        f["etl_runs_by_status"] = dict(conn.execute(
            "SELECT status, count(*) FROM etl_runs GROUP BY 1").fetchall())
    f["bronze_accounted"] = (f["bronze_rows"] == f["silver_rows"] + f["quarantine_rows"]
                             + f["duplicates_dropped"])
    f["gold_keys_equal_agg_rows"] = f["gold_distinct_keys"] == f["agg_rows"]
    return f


def fleet_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Simulate (cached), start an embedded PostgreSQL, load the fleet, catch the ETL up one
    arrival day per run, run the rules, check the counts. Figures are written to
    ``WORK/summary.json`` after every step, so a run stopped early still leaves what it did.

    A file ``WORK/stop`` ends the catch-up before the next day (the rules and checks then run
    over the days done); ``--resume`` keeps the lake and database of the previous run and
    continues with the arrival days it has not done (an interrupted day is run again: every
    ETL stage catches up on what its predecessor left)."""

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "scenario": "fleet-30d", "compressors": args.compressors, "days": args.days,
        "seed": FLEET_SEED, "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}"}
    out_file = work / "summary.json"
    done: list[dict[str, Any]] = []
    if args.resume:
        before = json.loads(out_file.read_text())
        done = [r for r in before.get("etl_days", []) if r["ok"]]
        figures["resumed"] = {"started": before["started"], "days_done": len(done),
                              "etl_total_s": before.get("etl_total_s")}
    (work / "stop").unlink(missing_ok=True)

    def save() -> None:
        out_file.write_text(json.dumps(figures, indent=1, default=str))

    t = time.perf_counter()
    sim = simulate_fleet(work, args.compressors, args.days)
    figures["simulate_s"] = round(time.perf_counter() - t, 1)
    days = arrival_days(sim)
    if args.max_days:
        days = days[:args.max_days]
    figures["arrival_days"] = len(days)
    landing, lake, pgdata = work / "landing", work / "lake", work / "pg"
    if not args.resume:
        for p in (landing, lake, pgdata):
            shutil.rmtree(p, ignore_errors=True)
    log = print if args.verbose else (lambda *a, **k: None)
    memory: TreeMemory | None = None
    try:
        with fleet_postgres(pgdata, sim / "fleet.json", cleanup_mode="stop") as url:
            with db.connect(url) as conn, db.admin(conn):
                figures["runs_left_running"] = len(conn.execute(
                    "SELECT 1 FROM etl_runs WHERE status = 'running'").fetchall())
            memory = TreeMemory(int((pgdata / "postmaster.pid").read_text().split()[0]))
            figures["etl_days"] = runs = list(done)
            t_etl = time.perf_counter()
            for day, files in days:
                if any(r["day"] == day for r in done):
                    continue
                for p in files:   # the day's files arrive next to the earlier days' ones
                    target = landing / p.relative_to(sim / "landing")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not target.is_symlink():
                        target.symlink_to(p)
                as_of = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
                r = _child_json("_etl-day", "--db-url", url, "--landing", str(landing),
                                "--lake", str(lake), "--as-of", as_of.isoformat())
                if r.get("stopped"):
                    figures["stopped_before"] = day
                    break
                r = {"day": day, "landing_files": len(files), **r,
                     "pg_rss_sum_peak_mb": memory.take()}
                runs.append(r)
                log(f"etl {day}: " + json.dumps({k: v for k, v in r.items() if k != "error"}),
                    flush=True)
                if not r["ok"]:
                    log(r["error"], flush=True)
                save()
            figures["etl_total_s"] = round(time.perf_counter() - t_etl, 1)
            memory.take()
            for mode in ("backtest", "latest"):
                engine = (["--gold-uri", str(lake / "gold")]
                          if mode == "backtest" and args.rules_engine == "duckdb" else [])
                r = _child_json("_rules", "--db-url", url, "--mode", mode, "--sim", str(sim),
                                *engine)
                r["pg_rss_sum_peak_mb"] = memory.take()
                figures[f"rules_{mode}"] = r
                log(f"rules {mode}: " + json.dumps(r, default=str), flush=True)
                save()
            t = time.perf_counter()
            figures["integrity"] = integrity(
                url, lake, sum(int(r.get("duplicates", 0)) for r in runs))
            figures["integrity"]["seconds"] = round(time.perf_counter() - t, 1)
            log("integrity: " + json.dumps(figures["integrity"]), flush=True)
    finally:
        if memory is not None:
            memory.close()
        if not args.keep:
            for p in (landing, lake, pgdata):
                shutil.rmtree(p, ignore_errors=True)
    figures["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    save()
    return figures


def check_fleet(f: dict[str, Any]) -> list[str]:
    """The invariants of the fleet scenario; an empty list when every one holds."""
    problems = [f"ETL run for arrival day {r['day']} failed" for r in f.get("etl_days", [])
                if not r["ok"]]
    for mode in ("backtest", "latest"):
        if not f.get(f"rules_{mode}", {}).get("ok"):
            problems.append(f"rules {mode} failed")
    i = f.get("integrity")
    if i is None:
        return [*problems, "integrity not checked"]
    if not i["bronze_accounted"]:
        problems.append(f"bronze {i['bronze_rows']} != silver {i['silver_rows']} + quarantine "
                        f"{i['quarantine_rows']} + duplicates {i['duplicates_dropped']}")
    if not i["gold_keys_equal_agg_rows"]:
        problems.append(f"aggregate rows {i['agg_rows']} != distinct gold keys "
                        f"{i['gold_distinct_keys']}")
    if i["gold_rows"] != i["gold_distinct_keys"]:
        problems.append(f"gold holds {i['gold_rows'] - i['gold_distinct_keys']} duplicate keys")
    for key in ("silver_duplicate_keys", "agg_duplicate_keys"):
        if i[key]:
            problems.append(f"{key} = {i[key]}")
    runs = dict(i["etl_runs_by_status"])
    if runs.get("running", 0) <= f.get("runs_left_running", 0):
        runs.pop("running", None)   # runs cut by an earlier interruption (see --resume)
    if set(runs) != {"succeeded"}:
        problems.append(f"etl_runs: {i['etl_runs_by_status']}")
    if f.get("stopped_before"):
        problems.append(f"stopped by WORK/stop before arrival day {f['stopped_before']}: "
                        f"{len(f['etl_days'])} of {f['arrival_days']} days done")
    return problems


def fleet_table(f: dict[str, Any]) -> str:
    """The figures as a plain-text table: one line per arrival day, then the rules."""
    lines = [f"{'day':10} {'files':>5} {'rows in':>9} {'quar.':>6} {'dupl.':>6} "
             f"{'agg rows':>10} {'wall s':>7} {'CPU s':>7} {'RSS MB':>7} {'PG MB':>7} "
             f"{'load':>9}"]
    for r in f.get("etl_days", []):
        if not r["ok"]:
            lines.append(f"{r['day']:10} {r['landing_files']:>5} FAILED")
            continue
        lines.append(
            f"{r['day']:10} {r['files']:>5} {r['rows_in']:>9,} {r['rows_quarantined']:>6,} "
            f"{r['duplicates']:>6,} {r['agg_rows_upserted']:>10,} {r['seconds']:>7.1f} "
            f"{r['cpu_seconds']:>7.1f} {r['peak_rss_mb']:>7.0f} {r['pg_rss_sum_peak_mb']:>7.0f} "
            f"{r['load_1m'][0]:>4.1f}-{r['load_1m'][1]:<4.1f}")
    ok = [r for r in f.get("etl_days", []) if r["ok"]]
    if ok:
        lines.append(f"ETL: {len(ok)}/{len(f['etl_days'])} days, {f.get('etl_total_s', 0)} s "
                     f"wall in all, {sum(r['seconds'] for r in ok):.0f} s in runs, "
                     f"{sum(r['cpu_seconds'] for r in ok):.0f} CPU s; per day max "
                     f"{max(r['seconds'] for r in ok):.1f} s, peak RSS max "
                     f"{max(r['peak_rss_mb'] for r in ok):.0f} MB")
    for mode in ("backtest", "latest"):
        r = f.get(f"rules_{mode}")
        if r and r.get("ok"):
            what = (f"{r['alerts']} alerts" if mode == "backtest"
                    else f"{r['breaches']} breaches, {r['clears']} clears")
            lines.append(f"rules {mode}: {r['seconds']} s wall, {r['cpu_seconds']} CPU s, "
                         f"peak RSS {r['peak_rss_mb']} MB, PG {r['pg_rss_sum_peak_mb']} MB, "
                         f"{what}")
    i = f.get("integrity")
    if i:
        lines.append(f"integrity: bronze {i['bronze_rows']:,} = silver {i['silver_rows']:,} + "
                     f"quarantine {i['quarantine_rows']:,} + duplicates "
                     f"{i['duplicates_dropped']:,} ({i['bronze_accounted']}); agg rows "
                     f"{i['agg_rows']:,} vs gold keys {i['gold_distinct_keys']:,} "
                     f"({i['gold_keys_equal_agg_rows']})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario",
                        choices=["worker-kill", "two-workers", "temporal-restart", "fleet-30d",
                                 "_worker", "_etl-day", "_rules"],
                        help="worker-kill, two-workers, temporal-restart: alert workflows on "
                             "the dev server; fleet-30d: the simulated fleet through the ETL "
                             "(one run per arrival day) and the rules")
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
    parser.add_argument("--keep", action="store_true",
                        help="keep the data directory (fleet-30d: the lake, landing folder "
                             "and database)")
    parser.add_argument("--compressors", type=int, default=4500,
                        help="fleet-30d: compressors simulated")
    parser.add_argument("--days", type=int, default=30, help="fleet-30d: days simulated")
    parser.add_argument("--work", type=Path, default=Path("/tmp/altaviz-scale-30d"),
                        help="fleet-30d: work folder (the simulated files are cached here; "
                             "figures go to WORK/summary.json)")
    parser.add_argument("--max-days", type=int, default=0,
                        help="fleet-30d: stop after this many arrival days (0: all)")
    parser.add_argument("--resume", action="store_true",
                        help="fleet-30d: keep the previous run's lake and database (it must "
                             "have used --keep) and continue with the days it has not done")
    parser.add_argument("--quiet", dest="verbose", action="store_false",
                        help="fleet-30d: no progress line per day")
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--task-queue", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", type=datetime.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["backtest", "latest"], help=argparse.SUPPRESS)
    parser.add_argument("--sim", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gold-uri", help=argparse.SUPPRESS)
    parser.add_argument("--rules-engine", choices=["duckdb", "postgres"], default="duckdb",
                        help="fleet-30d: backtest engine (duckdb: over the gold table, the "
                             "CLI's default; postgres: over sensor_readings_agg). With "
                             "--resume after every day is done, only the rules and checks run")
    args = parser.parse_args()
    if args.scenario == "_worker":
        asyncio.run(run_worker(args.db_url, args.address, args.task_queue, args.name))
        return 0
    if args.scenario == "_etl-day":
        etl_day_child(args.db_url, args.landing, args.lake, args.as_of)
        return 0
    if args.scenario == "_rules":
        rules_child(args.db_url, args.mode, args.sim, args.gold_uri)
        return 0
    if args.scenario == "fleet-30d":
        figures = fleet_scenario(args)
        problems = check_fleet(figures)
        print(f"machine: {figures['machine']}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        print(json.dumps(figures, indent=1, default=str))
        print(fleet_table(figures))
        print("OK" if not problems else "FAILED: " + "; ".join(problems))
        return 1 if problems else 0
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
