"""`altaviz up` as an operator runs it, in a process of its own with its own embedded
PostgreSQL and Temporal dev server (nothing shared with other tests): a 48-hour backlog
uploaded at once raises the alert its data deserves, marked late; `altaviz pipeline run`
started twice at once runs once; the JSON log has one line per pipeline run and per failed
delivery (no traceback, no address); /metrics exposes the series operators alert on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from altaviz.app.context import App
from altaviz.core import db
from altaviz.core.settings import Settings
from tests.conftest import two_tenant_fleet
from tests.etl.landing import live, reading, write_landing
from tests.notify.receivers import free_port, http_receiver

SECRET = "k3Jq9vTz0pW7xR2mN8bY4cH6fL1sD5gA-operability"


def _backlog(landing: Path, now: datetime) -> datetime:
    """48 hours of COMP-0003 (bravo) readings ending with the last hour that has ended, the
    hottest stage above the warning limit (330 F) for four hours two days ago, normal after;
    plus one reading of an unknown unit (quarantined). Returns the first hot hour."""
    last = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    first = last - timedelta(hours=47)
    hot = first + timedelta(hours=2)
    rows = []
    for h in range(48):
        hour = first + timedelta(hours=h)
        temp = 340.0 if hot <= hour < hot + timedelta(hours=4) else 260.0
        rows += [reading("COMP-0003", hour + timedelta(minutes=10 * i),
                         **live(h * 6 + i, stage2_discharge_temp_f=temp)) for i in range(6)]
    rows.append(reading("COMP-9999", last))
    write_landing(landing, rows, now, org="bravo")
    return hot


def _run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "altaviz.app.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=300)


def _admin(url: str, sql: str) -> list[tuple[Any, ...]]:
    with db.connect(url) as conn, db.admin(conn):
        return conn.execute(sql).fetchall()


def test_backlog_alert_is_late_run_now_runs_once_logs_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fleet = tmp_path / "fleet.json"
    fleet.write_text(two_tenant_fleet().model_dump_json())
    dead = free_port()
    http_port = free_port()
    with http_receiver() as receiver:
        contacts = tmp_path / "contacts.yaml"
        contacts.write_text(
            "contacts:\n  - org_id: bravo\n    contact_id: tech\n    name: Tech\n"
            "    role: technician\n    apprise_urls:\n"
            f"      - {receiver.url('tech')}\n"
            f"      - json://127.0.0.1:{dead}/down?to=someone@example.com\n")
        env = {**os.environ,
               "ALTAVIZ_DATA_DIR": str(data),
               "ALTAVIZ_TEMPORAL_PORT": str(free_port()),
               "ALTAVIZ_TEMPORAL_UI_PORT": str(free_port()),
               "ALTAVIZ_HTTP_PORT": str(http_port),
               "ALTAVIZ_TASK_QUEUE": f"operability-{os.getpid()}",
               "ALTAVIZ_LINK_SECRET": SECRET,
               "ALTAVIZ_LOG_LEVEL": "INFO",
               "ALTAVIZ_LOG_FORMAT": "json"}
        for key in ("ALTAVIZ_DATABASE_URL", "ALTAVIZ_DATABASE_OWNER_URL",
                    "ALTAVIZ_TEMPORAL_ADDRESS"):
            env.pop(key, None)
        log_path = tmp_path / "up.log"
        with log_path.open("w") as log:
            up = subprocess.Popen(
                [sys.executable, "-m", "altaviz.app.cli", "up", "--fleet", str(fleet),
                 "--contacts", str(contacts)],
                env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        attached = App(settings=Settings(data_dir=data))
        try:
            assert up.stdout is not None
            deadline = time.monotonic() + 180
            seen = []
            while time.monotonic() < deadline:
                line = up.stdout.readline()
                seen.append(line)
                if not line or "Ctrl-C to stop" in line:
                    break
            assert "Ctrl-C to stop" in "".join(seen), "".join(seen) + log_path.read_text()
            now = datetime.now(UTC)
            landing = data / "landing"
            hot = _backlog(landing, now)

            # two `pipeline run` at once: one run, both report it
            with ThreadPoolExecutor(2) as pool:
                both = list(pool.map(lambda _: _run(env, "pipeline", "run"), range(2)))
            for r in both:
                assert r.returncode == 0, r.stdout + r.stderr
                assert "Traceback" not in r.stderr
            ids = [r.stdout.splitlines()[0].split()[-1] for r in both]
            assert ids[0] == ids[1], [r.stdout for r in both]
            assert any(" 1 files, " in r.stdout for r in both), both[0].stdout

            owner_url = attached.owner_database_url()
            assert _admin(owner_url, "SELECT count(*) FROM etl_runs")[0][0] == 1
            alerts = _admin(owner_url, "SELECT breach_hour, opened_at, severity, org_id, "
                                       "rule_id, compressor_id FROM alert_history")
            # the units without readings are missing data now; COMP-0003's backlog raised
            # the alert its hot hours deserve
            assert {a[4] for a in alerts if a[5] != "COMP-0003"} <= {"data_missing"}
            hot_alerts = [a for a in alerts if a[5] == "COMP-0003"]
            assert len(hot_alerts) == 1, alerts
            breach_hour, opened_at, severity, org, rule, _ = hot_alerts[0]
            assert (org, rule, severity) == ("bravo", "discharge_temp_high", "warning")
            assert hot <= breach_hour <= hot + timedelta(hours=4)  # within the hot spell
            assert opened_at >= now - timedelta(minutes=1)   # the clock starts at notification

            def hot_messages() -> list[str]:
                # the opening notification (a later "Back to normal" one is prefixed)
                return [m["message"] for m in receiver.messages("tech")
                        if m.get("title", "").startswith("COMP-0003")]

            deadline = time.monotonic() + 180
            while not hot_messages() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "Late: data arrived 2 days late" in hot_messages()[0]
            # the second channel is down: the failures are recorded
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not _admin(
                    owner_url, "SELECT 1 FROM notifications WHERE status = 'failed'"):
                time.sleep(0.5)

            # a second run after the first: nothing new, nothing doubled
            again = _run(env, "pipeline", "run")
            assert again.returncode == 0 and " 0 files, " in again.stdout, again.stdout
            assert again.stdout.splitlines()[0].split()[-1] != ids[0]
            assert _admin(owner_url, "SELECT count(*) FROM alert_history")[0][0] == len(alerts)
            assert len(hot_messages()) == 1

            scrape = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                            timeout=10).read().decode()
            assert 'altaviz_alerts_open{org="bravo",severity="warning"} 1.0' in scrape
            assert 'altaviz_notifications_sent_total{channel="json"}' in scrape
            assert 'altaviz_notifications_failed_total{channel="json-2"}' in scrape, scrape
            waiting = next(line for line in scrape.splitlines()
                           if line.startswith("altaviz_notification_deliveries_waiting "))
            assert float(waiting.split()[-1]) >= 1
            assert 'altaviz_etl_rows_quarantined_total{reason="unknown_compressor"} 1.0' in scrape
            assert "altaviz_pipeline_run_duration_seconds " in scrape
            assert "altaviz_pipeline_lag_seconds 0.0" in scrape
            success = next(line for line in scrape.splitlines()
                           if line.startswith("altaviz_pipeline_last_success_timestamp_seconds"))
            assert float(success.split()[-1]) >= now.timestamp() - 60
        finally:
            attached.close()
            up.send_signal(signal.SIGINT)
            try:
                up.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                up.kill()
                up.communicate()

    records = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))   # every log line is one JSON object
    messages = [r["message"] for r in records]
    runs = [m for m in messages if m.startswith("pipeline run for hour")]
    assert len(runs) == 2, messages
    assert " 1 files, " in runs[0] and f"({len(alerts)} alerts opened or updated" in runs[0]
    failures = [m for m in messages if m.startswith("delivery failed:")]
    assert failures
    assert all("someone@example.com" not in m and str(dead) not in m for m in messages)
    assert all("attempt" in m for m in failures)
    assert not any("traceback" in r for r in records if "delivery" in r["message"]
                   or "NotificationDeliveryFailed" in r["message"])
