"""Benchmark of the alert workflows on the embedded Temporal dev server (real PostgreSQL).

1. Open N alerts at once (default 1,000): one breach per compressor, signal-with-start each
   (as the pipeline's ``start_or_update_alerts`` does), and wait until every alert is opened
   and persisted (``alert_history`` rows) with its "opened" notification sent.
2. One evaluation's M breaches (default 500; half update open alerts with a newer hour, half
   open new alerts of another rule) turned into started-or-updated workflows: time until all
   are signalled, and until every workflow has applied and persisted its breach.

Runs in its own data directory and ports so it does not disturb a developer's services:
``.venv/bin/python -m bench.bench_alerts [--alerts 1000 --breaches 500]``. The ``notify``
activity is a counting stand-in (delivery is benchmarked by the notifications work).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool
from temporalio import activity

from activities.pipeline import start_or_update_alert
from altaviz.app.context import App
from altaviz.app.temporal_setup import ensure_search_attributes
from altaviz.core import db
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
from worker import build_worker

HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)
ORG = "bench"


class CountingNotifier:
    """The notify activity's stand-in: counts calls per step."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    @activity.defn(name="notify")
    async def notify(self, req: NotifyRequest) -> NotifyResult:
        """Count the call."""
        self.calls[req.step] = self.calls.get(req.step, 0) + 1
        return NotifyResult(delivered=1)

    @activity.defn(name="plan_notification")
    async def plan_notification(self, req: NotifyRequest) -> DeliveryPlan:
        """Count the step; plan it for one recipient, delivered by :meth:`deliver`."""
        self.calls[req.step] = self.calls.get(req.step, 0) + 1
        return DeliveryPlan(recipients=[PlannedContact(contact_id="bench", role="technician",
                                                       channels=["bench"])])

    @activity.defn(name="deliver")
    async def deliver(self, target: DeliveryTarget) -> DeliveryOutcome:
        """Deliver nothing, successfully."""
        return DeliveryOutcome()

    def all(self) -> list[Any]:
        """The stand-ins, for ``build_worker(notify=...)``."""
        return [self.notify, self.plan_notification, self.deliver]


def fleet(n: int) -> Fleet:
    """One organization, one site, ``n`` compressors."""
    return Fleet(
        organizations=(Organization(org_id=ORG, name="Bench Gas"),),
        sites=(Site(org_id=ORG, site_id="S-01", name="Bench site", basin="Permian"),),
        compressors=tuple(
            Compressor(org_id=ORG, compressor_id=f"C-{i:05d}", site_id="S-01",
                       model="Ariel JGK/4", driver="Caterpillar G3516B", rated_hp=1380,
                       rated_rpm=1400, stages=3) for i in range(n)))


def breach(i: int, hour: datetime, rule: str = "discharge_temp_high") -> Breach:
    return Breach(org_id=ORG, compressor_id=f"C-{i:05d}", site_id="S-01", rule_id=rule,
                  metric="discharge_temp_max_f", value=335.0 + (hour.hour % 7), threshold=330,
                  severity="warning", hour=hour, rule_version=1)


async def dispatch(client: Any, breaches: list[Breach], task_queue: str) -> float:
    """Signal-with-start every breach with the activity's concurrency; seconds taken."""
    sem = asyncio.Semaphore(32)

    async def one(b: Breach) -> None:
        async with sem:
            await start_or_update_alert(client, b, task_queue=task_queue, reminder_minutes=0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in breaches))
    return time.perf_counter() - t0


async def wait_for(pool: ConnectionPool[Any], sql: str, target: int, timeout: float) -> float:
    """Poll ``sql`` (a count) until it reaches ``target``; seconds waited."""
    t0 = time.perf_counter()
    while True:
        with pool.connection() as conn:
            row = conn.execute(sql).fetchone()
        if row and row[0] >= target:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"only {row[0] if row else 0} of {target} after {timeout} s")
        await asyncio.sleep(0.25)


async def main(args: argparse.Namespace) -> dict[str, float]:
    data_dir = Path(args.data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(data_dir=data_dir, temporal_port=args.port,
                        temporal_ui_port=args.port + 1000, reminder_minutes=0,
                        task_queue="bench-alerts")
    app = App(settings=settings)
    figures: dict[str, float] = {}
    try:
        db_url = app.database_url()
        client = await app.temporal_client()
        await ensure_search_attributes(client)
        # the counts read every organization's rows: the schema owner's (the runtime login
        # reads nothing outside a tenant transaction)
        with db.connection_pool(db_url, min_size=2, max_size=16) as pool, \
                db.connection_pool(app.owner_database_url(), min_size=1, max_size=2) as owner, \
                ThreadPoolExecutor(max_workers=16) as executor:
            with db.connect(app.owner_database_url()) as conn:   # fleet loading is the owner's
                load_fleet(conn, fleet(args.alerts))
            notifier = CountingNotifier()
            worker = build_worker(client, task_queue=settings.task_queue, pool=pool,
                                  notify=notifier.all(), executor=executor,
                                  max_concurrent_activities=16,
                                  max_concurrent_workflow_tasks=64)
            async with worker:
                n, m = args.alerts, args.breaches
                opening = [breach(i, HOUR) for i in range(n)]
                t0 = time.perf_counter()
                figures["open_signalled_s"] = await dispatch(client, opening,
                                                             settings.task_queue)
                await wait_for(owner, "SELECT count(*) FROM alert_history", n, 600)
                figures["open_persisted_s"] = time.perf_counter() - t0
                figures["open_rate_per_s"] = n / figures["open_persisted_s"]
                while notifier.calls.get("opened", 0) < n:
                    await asyncio.sleep(0.25)
                figures["open_notified_s"] = time.perf_counter() - t0

                half = m // 2
                later = HOUR + timedelta(hours=1)
                evaluation = ([breach(i, later) for i in range(half)]
                              + [breach(i, later, rule="oil_temp_high") for i in range(m - half)])
                t0 = time.perf_counter()
                figures["eval_signalled_s"] = await dispatch(client, evaluation,
                                                             settings.task_queue)
                await wait_for(owner, "SELECT (SELECT count(*) FROM alert_events WHERE "
                               "event_type = 'breach_repeated') + (SELECT count(*) FROM "
                               "alert_history WHERE rule_id = 'oil_temp_high')", m, 600)
                figures["eval_applied_s"] = time.perf_counter() - t0
                # The same evaluation again: nothing may change.
                t0 = time.perf_counter()
                figures["rerun_signalled_s"] = await dispatch(client, evaluation,
                                                              settings.task_queue)
                await asyncio.sleep(3)
                with owner.connection() as conn:
                    events = conn.execute("SELECT count(*) FROM alert_events").fetchone()
                    alerts = conn.execute("SELECT count(*) FROM alert_history").fetchone()
                figures["alerts_total"] = float(alerts[0] if alerts else 0)
                figures["events_total"] = float(events[0] if events else 0)
                figures["expected_events"] = float(n + m)
                figures["notify_opened"] = float(notifier.calls.get("opened", 0))
    finally:
        app.close()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000, help="alerts opened at once")
    parser.add_argument("--breaches", type=int, default=500, help="breaches of one evaluation")
    parser.add_argument("--port", type=int, default=17433, help="dev server port (UI: +1000)")
    parser.add_argument("--data-dir", default=f"/tmp/altaviz-bench-alerts-{os.getpid()}",
                        help="scratch data directory (deleted afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    ns = parser.parse_args()
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    result = asyncio.run(main(ns))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {ns.alerts} alerts, {ns.breaches} breaches")
    for key, value in result.items():
        print(f"  {key:<20} {value:10.2f}")
