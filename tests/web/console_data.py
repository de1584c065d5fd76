"""Data the console tests read besides the real alert the rig opens: console users of both
organizations, more alerts (one of the other organization), hourly aggregates around the
breach and data-quality checks, written to PostgreSQL the way the loaders store them."""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg.types.json import Jsonb

from altaviz.app.web.auth import hash_password
from altaviz.app.web.console_store import upsert_user
from altaviz.core.db import connect
from tests.web.conftest import HOUR

PASSWORD = "a-console-password-1"
ACME_LOGIN = "sam@acme.example"
BRAVO_LOGIN = "kim@bravo.example"
#: the other organization's alert: its page must never show to acme
BRAVO_ALERT = "alert/bravo/COMP-0003/oil_pressure_low/2026-03-02T08:00:00+00:00"
ACME_WARNING = "alert/acme/COMP-0002/bearing_temp_high/2026-03-01T06:00:00+00:00"
ACME_RESOLVED = "alert/acme/COMP-0002/discharge_temp_high/2026-02-28T04:00:00+00:00"
ACME_NO_DATA = "alert/acme/COMP-0002/data_missing/2026-03-02T09:00:00+00:00"


def _alert(org: str, comp: str, rule: str, metric: str, value: float, threshold: float,
           severity: str, state: str, hour: datetime) -> dict[str, object]:
    return {"alert_id": f"alert/{org}/{comp}/{rule}/{hour.isoformat()}", "org_id": org,
            "compressor_id": comp, "rule_id": rule, "metric": metric, "value": value,
            "threshold": threshold, "severity": severity,
            "condition_state": "cleared" if state == "resolved" else "active",
            "ack_state": "unacknowledged", "state": state, "breach_hour": hour,
            "opened_at": hour + timedelta(minutes=5),
            "resolved_at": hour + timedelta(hours=3) if state == "resolved" else None,
            "workflow_id": f"alert/{org}/{comp}/{rule}"}


def seed_rules(db_url: str) -> None:
    """A default rule set with a threshold rule on frame vibration (warning 8, critical 12)
    and a no-data rule watching speed, plus an open no-data alert of COMP-0002."""
    with connect(db_url) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content) "
            "VALUES (NULL, 1, 'test', 'test', '{}') RETURNING rule_set_id").fetchone()
        assert row is not None
        set_id = row[0]
        for rule_id, metric, kind, definition in (
                ("vibration_frame_high", "vibration_frame_mm_s", "threshold",
                 {"kind": "threshold", "warning": 8, "critical": 12}),
                ("data_missing", "speed_rpm", "no_data",
                 {"kind": "no_data", "warning_after_hours": 3, "critical_after_hours": 12})):
            conn.execute("INSERT INTO alert_rules (rule_set_id, rule_id, metric, kind, "
                         "definition) VALUES (%s, %s, %s, %s, %s)",
                         [set_id, rule_id, metric, kind, Jsonb(definition)])
        conn.execute(
            "INSERT INTO alert_history (alert_id, org_id, compressor_id, rule_id, metric, "
            "value, threshold, severity, condition_state, ack_state, state, breach_hour, "
            "opened_at, workflow_id) VALUES (%s, 'acme', 'COMP-0002', 'data_missing', "
            "'speed_rpm', 5, 3, 'warning', 'active', 'unacknowledged', 'open', %s, %s, "
            "'alert/acme/COMP-0002/data_missing')",
            [ACME_NO_DATA, HOUR - timedelta(hours=1), HOUR])


def seed(db_url: str) -> None:
    """Users, extra alerts, 72 h of vibration means for COMP-0001 and quality checks."""
    hashed = hash_password(PASSWORD)
    rows = [
        _alert("bravo", "COMP-0003", "oil_pressure_low", "oil_pressure_psig", 18.2, 25.0,
               "critical", "open", HOUR - timedelta(hours=2)),
        _alert("acme", "COMP-0002", "bearing_temp_high", "bearing_temp_max_f", 212.4, 200.0,
               "warning", "open", HOUR - timedelta(hours=28)),
        _alert("acme", "COMP-0002", "discharge_temp_high", "discharge_temp_max_f", 332.0,
               330.0, "warning", "resolved", HOUR - timedelta(hours=54)),
    ]
    with connect(db_url) as conn:
        upsert_user(conn, "acme", ACME_LOGIN, "Sam Okafor", hashed)
        upsert_user(conn, "bravo", BRAVO_LOGIN, "Kim Bravo", hashed)
        with conn.transaction():
            for r in rows:
                conn.execute(
                    "INSERT INTO alert_history (alert_id, org_id, compressor_id, rule_id, "
                    "metric, value, threshold, severity, condition_state, ack_state, state, "
                    "breach_hour, opened_at, resolved_at, workflow_id) VALUES (%(alert_id)s, "
                    "%(org_id)s, %(compressor_id)s, %(rule_id)s, %(metric)s, %(value)s, "
                    "%(threshold)s, %(severity)s, %(condition_state)s, %(ack_state)s, "
                    "%(state)s, %(breach_hour)s, %(opened_at)s, %(resolved_at)s, "
                    "%(workflow_id)s)", r)
            for h in range(72):
                hour = HOUR - timedelta(hours=71 - h)
                for comp, metric, mean in (
                        ("COMP-0001", "vibration_frame_mm_s", 5.0 + h * 0.1),
                        ("COMP-0001", "bearing_temp_max_f", 180.0 + (h % 5)),
                        ("COMP-0003", "oil_pressure_psig", 40.0 - h * 0.3)):
                    org = "bravo" if comp == "COMP-0003" else "acme"
                    conn.execute(
                        "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, "
                        "n, mean, min, max, outliers, late) VALUES (%s, %s, %s, %s, 6, %s, %s, "
                        "%s, 0, 0)", [org, comp, metric, hour, mean, mean - 0.2, mean + 0.2])
            # the shapes etl/quality.py writes (freshness in minutes, shares, channel names)
            for org, comp, check, measured, threshold, passed, details in (
                    ("acme", "COMP-0001", "freshness", 30.0, 75.0, True, {}),
                    ("acme", "COMP-0001", "completeness", 0.01, 0.05, True, {}),
                    ("acme", "COMP-0002", "freshness", 420.0, 75.0, False, {}),
                    ("acme", "COMP-0002", "completeness", 0.032, 0.05, True, {}),
                    ("acme", "COMP-0002", "sensor_offline", 1.0, 0.0, False,
                     {"running_readings": 36, "offline": ["oil_temp_f"]}),
                    ("bravo", "COMP-0004", "freshness", 1800.0, 75.0, False, {}),
                    ("bravo", "COMP-0004", "sensor_offline", 1.0, 0.0, False,
                     {"running_readings": 36, "offline": ["jacket_water_temp_f"]})):
                conn.execute(
                    "INSERT INTO data_quality_checks (org_id, compressor_id, run_id, "
                    "check_type, measured, threshold, passed, details) VALUES (%s, %s, 'r1', "
                    "%s, %s, %s, %s, %s)",
                    [org, comp, check, measured, threshold, passed, Jsonb(details)])
