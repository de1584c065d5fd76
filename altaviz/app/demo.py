"""The demo: a simulated fleet with faults, run through the whole system on this machine.

Simulate -> load fleet, contacts (pointing at the local inbox) and rules -> start the worker and
the acknowledgement server -> ETL the history -> evaluate it through the real pipeline workflow
-> alerts open as Temporal workflows and notify the inbox -> unacknowledged warnings escalate
(the delay is shortened so it happens within minutes) -> a summary with the faults caught and
their lead time. Nothing here is demo-only plumbing except the inbox receiver and the shortened
escalation delay; every other step is the production code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from altaviz.app.context import App
from altaviz.app.holds import add_window
from altaviz.app.runtime import Runtime, RuntimeOptions, load_reference_data
from altaviz.app.web.auth import hash_password
from altaviz.app.web.console_store import upsert_user
from altaviz.app.web.sign_in_link import set_user_contact
from altaviz.core import db
from altaviz.core.contacts import Contact, ContactsFile
from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet
from altaviz.core.payloads import PipelineInput
from altaviz.core.settings import Settings
from altaviz.core.silences import MaintenanceWindow
from altaviz.simulator import FieldConfig, SimulationConfig, simulate
from altaviz.simulator.ground_truth import GroundTruth
from etl.pipeline import run_pipeline
from rules.backtest import BacktestReport, backtest, format_scores, load_ground_truth
from rules.schema import notice_rule_ids
from workflows.pipeline import PipelineWorkflow

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """Knobs of the demo (the defaults keep a run to a few minutes)."""

    compressors: int = 24
    days: int = 10
    seed: int = 7
    fault_share: float = 0.3
    escalation_minutes: float = 1.0      # every rule's escalation delay, shortened for the demo
    wait_for_escalation_s: float = 150.0
    chunk_hours: int = 24                # hours evaluated per pipeline run while replaying
    #: The calm simulator profile (speed carries the load, no nuisance events); the default is
    #: a fleet that behaves like a field: the ETL keeps a reading whose channel is missing.
    calm: bool = False


@dataclass
class FaultCaught:
    """One injected fault and how the rules did on it."""

    compressor_id: str
    mode: str
    caught: bool
    lead_hours: float | None
    rules: tuple[str, ...]


@dataclass
class DemoReport:
    """What the demo did, for the summary and the end-to-end test."""

    alerts_by_severity_state: dict[tuple[str, str], int] = field(default_factory=dict)
    escalated: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0
    faults: list[FaultCaught] = field(default_factory=list)
    false_alerts_per_100_days: float | None = None
    false_alerts_by_rule: dict[str, int] = field(default_factory=dict)
    #: the backtest of the demo's range against the ground truth: the closing figures
    backtest: BacktestReport | None = None
    #: what silences, maintenance windows and unit stops held back in this run: breaches kept
    #: from opening alerts (``maintenance``, ``inhibited``) and notifications held
    #: (``silence_notifications``, ``maintenance_notifications``)
    held_back: dict[str, int] = field(default_factory=dict)
    inbox_url: str = ""
    #: the supervisor console and its demo sign-ins (login, password), one per organization
    console_url: str = ""
    console_logins: list[tuple[str, str]] = field(default_factory=list)
    temporal_ui_url: str | None = None
    seconds: float = 0.0


def load_planned_stops(db_url: str, truth: GroundTruth) -> int:
    """Enter the simulator's planned stops as the maintenance windows an operator would have
    planned for them; shut-ins and other stops stay unplanned (each raises one stop alert)."""
    stops = [e for e in truth.nuisance_events if e.kind == "planned_stop"]
    with db.connect(db_url) as conn:
        for e in stops:
            add_window(conn, MaintenanceWindow(
                org_id=e.org_id, compressor_id=e.compressor_id, starts_at=e.start,
                ends_at=e.end, reason="planned maintenance", created_by="demo"))
    return len(stops)


def demo_contacts(fleet: Fleet, base_url: str) -> ContactsFile:
    """A technician per site and a supervisor per organization, all delivering to the local
    inbox through Apprise's ``json://`` (the same path a real webhook takes)."""
    host = base_url.split("://", 1)[1]
    contacts: list[Contact] = []
    for site in fleet.sites:
        cid = f"tech-{site.site_id}".lower()
        contacts.append(Contact(org_id=site.org_id, contact_id=cid,
                                name=f"Technician {site.name}", role="technician",
                                sites=(site.site_id,),
                                apprise_urls=(f"json://{host}/inbox/receive/{cid}",)))
    for org in fleet.organizations:
        cid = f"sup-{org.org_id}"
        contacts.append(Contact(org_id=org.org_id, contact_id=cid,
                                name=f"Supervisor {org.name}", role="supervisor",
                                apprise_urls=(f"json://{host}/inbox/receive/{cid}",)))
    return ContactsFile(contacts=tuple(contacts))


#: The demo's console password: a local demo on a loopback address, not a secret.
DEMO_CONSOLE_PASSWORD = "altaviz-demo"


def demo_console_users(db_url: str, fleet: Fleet) -> list[tuple[str, str]]:
    """A console user per organization (``supervisor@<org>``, :data:`DEMO_CONSOLE_PASSWORD`),
    so the demo's supervisor can sign in to ``/console`` at once."""
    hashed = hash_password(DEMO_CONSOLE_PASSWORD)
    logins: list[tuple[str, str]] = []
    with db.connect(db_url) as conn:
        for org in fleet.organizations:
            login = f"supervisor@{org.org_id}"
            upsert_user(conn, org.org_id, login, f"Supervisor {org.name}", hashed)
            # sign-in links reach the supervisor's inbox (demo_contacts' sup-<org>)
            with contextlib.suppress(InputError):
                set_user_contact(conn, org.org_id, login, f"sup-{org.org_id}")
            logins.append((login, DEMO_CONSOLE_PASSWORD))
    return logins


async def run_demo(app: App, options: DemoOptions, say: Say = print) -> tuple[Runtime, DemoReport]:
    """Run the demo; returns the still-running runtime (the caller stops it) and the report."""

    started = time.monotonic()
    report = DemoReport()
    settings = app.settings
    demo_dir = settings.data_dir.resolve() / "demo"
    app._settings = settings = settings.model_copy(update={
        "landing_dir": demo_dir / "sim" / "landing", "lake_dir": demo_dir / "lake"})

    say("[1/7] starting PostgreSQL and Temporal")
    db_url = await asyncio.to_thread(app.owner_database_url)   # loading and the report
    await asyncio.to_thread(app.temporal_address)
    report.temporal_ui_url = app.temporal_ui_url()
    say(f"      PostgreSQL ready, schema migrated; Temporal UI at {report.temporal_ui_url}")

    # History up to the current hour, so the data is "live" (freshness checks pass) and the
    # last evaluated hour is the last hour with readings.
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now_hour - timedelta(days=options.days)
    end = now_hour - timedelta(hours=1)
    say(f"[2/7] simulating {options.compressors} compressors x {options.days} days "
        f"(seed {options.seed}, {options.fault_share:.0%} with an injected fault, "
        f"{'calm' if options.calm else 'field behaviour'})")
    sim = await asyncio.to_thread(simulate, SimulationConfig(
        compressors=options.compressors, days=options.days, seed=options.seed, start=start,
        out=demo_dir / "sim", fault_share=options.fault_share, overwrite=True,
        field=None if options.calm else FieldConfig()))
    faults = sim.ground_truth.faults
    say(f"      {sim.rows_written:,} readings in {len(sim.files)} landing files; faults: "
        + ", ".join(f"{f.compressor_id} {f.mode}" for f in faults))

    say("[3/7] loading the fleet, contacts and rules")
    contacts = demo_contacts(sim.fleet, settings.base_url)
    rule_set = await asyncio.to_thread(load_reference_data, db_url, sim.fleet, contacts,
                                       settings.rules_file, settings.catalog)
    say(f"      {len(sim.fleet.organizations)} organizations, {len(sim.fleet.sites)} sites, "
        f"{len(contacts.contacts)} contacts, rule set v{rule_set.version} "
        f"({len(rule_set.rules)} rules)")
    planned = await asyncio.to_thread(load_planned_stops, db_url, sim.ground_truth)
    say(f"      {planned} planned stops entered as maintenance windows (no alerts for them)")

    say("[4/7] starting the worker and the acknowledgement server")
    runtime = Runtime(app, RuntimeOptions(
        demo=True, schedule=False,
        escalation_override_hours=options.escalation_minutes / 60))
    await runtime.start()
    report.inbox_url = f"{settings.base_url}/inbox"
    report.console_url = f"{settings.base_url}/console"
    report.console_logins = await asyncio.to_thread(demo_console_users, db_url, sim.fleet)
    say(f"      worker polling task queue {settings.task_queue!r}; inbox at {report.inbox_url}")

    try:
        say("[5/7] ETL: landing files -> bronze -> silver -> gold -> hourly aggregates")
        etl_url = await asyncio.to_thread(app.etl_database_url)
        summary = await asyncio.to_thread(run_pipeline, settings, etl_url)
        say(f"      {summary.line()}")

        say(f"[6/7] replaying {options.days * 24} hours of history through the pipeline "
            f"workflow ({options.chunk_hours} h per run)")
        await _replay(app, settings.task_queue, start, end, options.chunk_hours, say)

        say(f"[7/7] waiting for unacknowledged warnings to escalate (delay shortened to "
            f"{options.escalation_minutes:g} min)")
        await _wait_for_escalation(db_url, options.wait_for_escalation_s)
        await asyncio.to_thread(_fill_report, report, db_url, rule_set, start, end,
                                sim.ground_truth_path, app.settings)
    except BaseException:
        await runtime.stop()
        raise
    report.seconds = time.monotonic() - started
    return runtime, report


async def _replay(app: App, task_queue: str, start: datetime, end: datetime,
                  chunk_hours: int, say: Say) -> None:

    client = await app.temporal_client()
    hour = start
    while hour < end:
        last = min(hour + timedelta(hours=chunk_hours - 1), end)
        hours = []
        h = hour
        while h <= last:
            hours.append(h)
            h += timedelta(hours=1)
        result = await client.execute_workflow(
            PipelineWorkflow.run,
            PipelineInput(hour=last, hours=hours, run_etl=False),
            id=f"demo-pipeline/{last:%Y%m%dT%H}", task_queue=task_queue,
            execution_timeout=timedelta(minutes=10))
        say(f"      {hour:%Y-%m-%d %H:00} .. {last:%Y-%m-%d %H:00}: {result.breaches} breaches, "
            f"{result.clears} clears -> {result.alerts_signalled} alert workflows signalled")
        hour = last + timedelta(hours=1)


async def _wait_for_escalation(db_url: str, timeout_s: float) -> int:
    """Wait until every alert that is still an unacknowledged warning has escalated."""
    deadline = time.monotonic() + timeout_s
    pending = escalated = 0
    while time.monotonic() < deadline:
        pending, escalated = await asyncio.to_thread(_escalation_counts, db_url)
        if pending == 0:
            break
        await asyncio.sleep(2)
    return escalated


def _escalation_counts(db_url: str) -> tuple[int, int]:
    with db.connect(db_url) as conn, db.admin(conn):
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE severity = 'warning' AND state = 'open'),"
            "       count(*) FILTER (WHERE escalated_at IS NOT NULL) FROM alert_history"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _fill_report(report: DemoReport, db_url: str, rule_set: Any, start: datetime,
                 end: datetime, ground_truth_path: Path, settings: Settings) -> None:
    with db.connect(db_url) as conn:
        with db.admin(conn):
            rows = conn.execute("SELECT severity, state, count(*) FROM alert_history "
                                "GROUP BY 1, 2").fetchall()
            report.alerts_by_severity_state = {(r[0], r[1]): int(r[2]) for r in rows}
            esc = conn.execute("SELECT count(*) FROM alert_history WHERE escalated_at IS NOT NULL"
                               ).fetchone()
            report.escalated = int(esc[0]) if esc else 0
            sent = Counter(dict(conn.execute(
                "SELECT status, count(*) FROM notifications GROUP BY 1").fetchall()))
            report.notifications_sent = int(sent.get("sent", 0))
            report.notifications_failed = int(sent.get("failed", 0))
            held = {str(k): int(v) for k, v in conn.execute(
                "SELECT held_by, count(*) FROM held_breaches GROUP BY 1").fetchall()}
            for by, n in conn.execute(
                    "SELECT details ->> 'held_by', count(*) FROM alert_events"
                    " WHERE event_type = 'notify_held' GROUP BY 1").fetchall():
                held[f"{by}_notifications"] = int(n)
            report.held_back = held
        orgs = db.org_ids(conn)
        truth = load_ground_truth(ground_truth_path)
        bt = backtest(conn, rule_set, orgs, start, end, truth.faults,
                      exclude_rules=notice_rule_ids(rule_set),
                      threads=settings.rules_threads, nuisance=truth.nuisance)
    report.backtest = bt
    report.faults = [FaultCaught(o.fault.compressor_id, o.fault.mode, o.caught, o.lead_hours,
                                 o.rules) for o in bt.faults]
    if bt.healthy_compressor_days:
        report.false_alerts_per_100_days = 100 * bt.false_alerts / bt.healthy_compressor_days
    report.false_alerts_by_rule = bt.false_by_rule


def held_back_line(held: dict[str, int]) -> str:
    """``held back: 3 breaches in maintenance windows, 5 by unit stops; 2 notifications by
    silences, 1 by windows``: counted apart, so a quiet run is never mistaken for a calm one."""
    return (f"held back: {held.get('maintenance', 0)} breaches in maintenance windows, "
            f"{held.get('inhibited', 0)} by unit stops; "
            f"{held.get('silence_notifications', 0)} notifications by silences, "
            f"{held.get('maintenance_notifications', 0)} by windows")


def format_report(report: DemoReport) -> str:
    """The end-of-demo summary, for people."""
    lines = ["", "Altaviz demo summary", "--------------------", "alerts (severity / state):"]
    for (severity, state), n in sorted(report.alerts_by_severity_state.items()):
        lines.append(f"  {severity:<9} {state:<24} {n}")
    lines.append(f"  escalated to critical: {report.escalated}")
    lines.append(f"notifications: {report.notifications_sent} delivered, "
                 f"{report.notifications_failed} failed attempts")
    lines.append(held_back_line(report.held_back))
    caught = [f for f in report.faults if f.caught]
    lines.append(f"faults caught: {len(caught)} of {len(report.faults)}")
    for f in report.faults:
        lead = (f"{f.lead_hours:.0f} h before failure" if f.lead_hours is not None
                else "unit had not failed yet" if f.caught else "missed")
        rules = f" by {', '.join(f.rules)}" if f.rules else ""
        lines.append(f"  {f.compressor_id} {f.mode:<18} {'caught' if f.caught else 'MISSED':<7}"
                     f" {lead}{rules}")
    if report.backtest is not None:
        lines.append("against the ground truth (faults that failed in the range; healthy time: "
                     "outside onset-to-failure, before failure):")
        lines += format_scores(report.backtest)
        held = report.backtest.held_back
        lines.append(f"  backtest, held back: {held['maintenance']} alerts by maintenance "
                     f"windows, {held['inhibited']} by unit stops (never opened); "
                     f"{held['silence']} opened inside a silence")
    lines.append(f"inbox (click a link to acknowledge): {report.inbox_url}")
    if report.console_logins:
        login, password = report.console_logins[0]
        lines.append(f"supervisor console: {report.console_url} (sign in as {login}, password "
                     f"{password}; each organization has its supervisor@<org>)")
    if report.temporal_ui_url:
        lines.append(f"Temporal Web UI (each alert is a workflow): {report.temporal_ui_url}")
    lines.append(f"done in {report.seconds:.0f} s")
    return "\n".join(lines)
