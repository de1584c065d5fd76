"""Fixtures of the notification tests: local receivers, contacts and an open alert row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from altaviz.core.contacts import Contact, ContactsFile, load_contacts
from altaviz.core.links import LinkSigner
from altaviz.core.payloads import AlertState
from altaviz.core.settings import Settings
from tests.notify.receivers import HttpReceiver, SmtpSink, http_receiver, smtp_sink

SECRET = b"test-link-secret-0123456789abcdef"
BREACH_HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with http_receiver() as rec:
        yield rec


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET)


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(data_dir=tmp_path, public_url="https://alerts.example.com")


def standard_contacts(receiver: HttpReceiver, smtp: SmtpSink | None = None) -> ContactsFile:
    """acme: tech-a (PB-01, json + mail), tech-x (another site: never routed), sup-a (all
    sites); bravo: tech-b."""
    tech_urls = [receiver.url("acme/tech-a")]
    if smtp is not None:
        tech_urls.append(smtp.url("tech-a@example.com"))
    return ContactsFile(contacts=(
        Contact(org_id="acme", contact_id="tech-a", name="Jo Rivera", role="technician",
                sites=("PB-01",), apprise_urls=tuple(tech_urls)),
        Contact(org_id="acme", contact_id="sup-a", name="Sam Okafor", role="supervisor",
                apprise_urls=(receiver.url("acme/sup-a"),)),
        Contact(org_id="bravo", contact_id="tech-b", name="Lee Chan", role="technician",
                sites=("EF-01",), apprise_urls=(receiver.url("bravo/tech-b"),)),
    ))


def insert_alert(conn: psycopg.Connection[Any], *, org: str = "acme",
                 compressor: str = "COMP-0001", site: str = "PB-01",
                 rule: str = "vibration_frame_high", metric: str = "vibration_frame_mm_s",
                 value: float = 12.6, threshold: float = 12.0, severity: str = "warning",
                 diagnosis: str = "bearing wear suspected") -> AlertState:
    """An open alert as the alert workflow's persistence activity would have written it."""
    wf = f"alert/{org}/{compressor}/{rule}"
    state = AlertState(
        alert_id=f"{wf}/{BREACH_HOUR:%Y%m%dT%H}", workflow_id=wf, org_id=org,
        compressor_id=compressor, site_id=site, rule_id=rule, metric=metric, value=value,
        threshold=threshold, severity=severity,
        breach_hour=BREACH_HOUR, opened_at=BREACH_HOUR + timedelta(minutes=5),
        diagnosis=diagnosis)
    with conn.transaction():
        conn.execute(
            "INSERT INTO alert_history (alert_id, org_id, compressor_id, rule_id, metric, value,"
            " threshold, severity, condition_state, ack_state, state, breach_hour, opened_at,"
            " workflow_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,'active','unacknowledged','open',"
            " %s,%s,%s)",
            [state.alert_id, org, compressor, rule, metric, value, threshold, severity,
             state.breach_hour, state.opened_at, wf])
    return state


def insert_trend(conn: psycopg.Connection[Any], values: list[float], *, org: str = "acme",
                 compressor: str = "COMP-0001", metric: str = "vibration_frame_mm_s",
                 stopped: frozenset[int] = frozenset()) -> None:
    """Hourly means ending at the breach hour; the unit runs at rated speed through each hour
    except the indexes in ``stopped``, where it stops."""
    with conn.transaction():
        row = conn.execute("SELECT rated_rpm FROM compressors WHERE compressor_id = %s",
                           [compressor]).fetchone()
        rated = float(row[0]) if row else 1200.0
        for i, v in enumerate(values):
            hour = BREACH_HOUR - timedelta(hours=len(values) - 1 - i)
            conn.execute(
                "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean,"
                " max) VALUES (%s,%s,%s,%s,6,%s,%s)", [org, compressor, metric, hour, v, v])
            speed = 0.0 if i in stopped else rated
            if metric == "speed_rpm":
                continue
            conn.execute(
                "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean,"
                " min, max) VALUES (%s,%s,'speed_rpm',%s,6,%s,%s,%s)",
                [org, compressor, hour, speed, speed, rated])


@pytest.fixture
def loaded(conn: psycopg.Connection[Any], fleet: Any, receiver: HttpReceiver,
           smtp: SmtpSink) -> ContactsFile:
    contacts = standard_contacts(receiver, smtp)
    load_contacts(conn, contacts)
    return contacts
