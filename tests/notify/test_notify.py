"""The notify activity against real receivers: a local HTTP endpoint (Apprise json://) and a
local SMTP server (mailto://), real PostgreSQL, and real Temporal retries."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.notify import NotificationActivities
from altaviz.core.contacts import ContactsFile
from altaviz.core.db import tenant
from altaviz.core.links import LinkClaims, LinkError, LinkSigner, find_short_link
from altaviz.core.messages import SMS_LIMIT, MessageContext, load_context, render
from altaviz.core.payloads import AlertState, NotifyRequest, NotifyResult
from altaviz.core.settings import Settings
from tests.notify.conftest import SECRET, insert_alert, insert_trend
from tests.notify.receivers import HttpReceiver, SmtpSink

LINK = re.compile(r"https://alerts\.example\.com/a/([a-z0-9_-]+)/([A-Za-z0-9_-]{24})(?:\s|$)")
VIEW = re.compile(r"History: https://alerts\.example\.com/a/([a-z0-9_-]+)/([A-Za-z0-9_-]{24})")


def _claims(conn: psycopg.Connection[Any], signer: LinkSigner, text: str) -> LinkClaims:
    """The claims of the short acknowledgement link in a message, verified as the server
    does."""
    m = LINK.search(text)
    assert m is not None, text
    with tenant(conn, m.group(1)):
        record = find_short_link(conn, m.group(2))
    return signer.verify_short(m.group(1), m.group(2), record, action="ack")


def _run(acts: NotificationActivities, req: NotifyRequest) -> Any:
    return ActivityEnvironment().run(acts.notify, req)


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT step, contact_id, channel, attempt, status FROM notifications "
                        "ORDER BY notification_id").fetchall()


async def test_warning_reaches_site_technicians_by_http_and_email(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        smtp: SmtpSink, settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    insert_trend(conn, [9.8, 10.4, 11.1, 11.9, 12.3, 12.6])
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    result = await _run(acts, NotifyRequest(alert=alert, step="opened", audience="technicians",
                                            event="opened"))
    assert result == NotifyResult(delivered=2, failed=0, recipients=["tech-a"])

    [msg] = receiver.messages("acme/tech-a")
    assert msg["title"] == "COMP-0001 frame vibration WARNING 12.6 mm/s (limit 12)"
    body = msg["message"]
    for expected in ["Where: Pecos 1, Permian (Ariel JGK/4)",
                     "Likely: bearing wear suspected.",
                     "Trend over running hours: 9.8 → 10.4 → 11.1 → 11.9 → 12.3 → 12.6 mm/s, "
                     "rising ↑ 2.8 in 5 hours",
                     "Check:", "Acknowledge: https://alerts.example.com/a/acme/"]:
        assert expected in body
    assert "History" not in body          # technicians get no history link
    claims = _claims(conn, signer, body)
    assert (claims.org_id, claims.alert_id, claims.contact_id) == ("acme", alert.alert_id,
                                                                  "tech-a")
    # nobody else: not the supervisor (warning step), not the other org
    assert receiver.messages("acme/sup-a") == [] and receiver.messages("bravo/tech-b") == []

    [mail] = smtp.messages
    assert mail["Subject"] == "COMP-0001 frame vibration WARNING 12.6 mm/s (limit 12)"
    assert mail["To"] == "tech-a@example.com"
    text = SmtpSink.text(mail)
    assert "Likely: bearing wear suspected." in text
    assert _claims(conn, signer, text).contact_id == "tech-a"

    assert _rows(conn) == [("opened", "tech-a", "json", 1, "sent"),
                           ("opened", "tech-a", "mailto", 1, "sent")] or sorted(_rows(conn)) == \
        sorted([("opened", "tech-a", "json", 1, "sent"), ("opened", "tech-a", "mailto", 1, "sent")])
    # the delivery log never holds a URL (they carry credentials)
    dump = str(conn.execute("SELECT n.* FROM notifications n").fetchall())
    assert "127.0.0.1" not in dump and "://" not in dump


async def test_escalation_adds_supervisors_with_signed_history_link(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn, severity="warning", value=9.1, threshold=8.0)
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    await _run(acts, NotifyRequest(alert=alert, step="escalated",
                                   audience="technicians_and_supervisors", event="escalated"))
    [sup] = receiver.messages("acme/sup-a")
    assert sup["title"] == "ESCALATED COMP-0001 frame vibration WARNING 9.1 mm/s (limit 8)"
    assert "Not acknowledged after 4 hours: sent to supervisors." in sup["message"]
    m = VIEW.search(sup["message"])
    assert m is not None
    with tenant(conn, m.group(1)):
        record = find_short_link(conn, m.group(2))
    claims = signer.verify_short(m.group(1), m.group(2), record, action="view")
    assert claims.contact_id == "sup-a" and claims.alert_id == alert.alert_id
    assert LINK.search(sup["message"])      # the supervisor may acknowledge too, with his own link
    [tech] = receiver.messages("acme/tech-a")
    assert "History" not in tech["message"]


async def test_resolution_goes_to_everyone_notified_without_ack_link(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        smtp: SmtpSink, settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    await _run(acts, NotifyRequest(alert=alert, step="opened", audience="technicians",
                                   event="opened"))
    resolved = alert.model_copy(update={"state": "resolved", "resolved_by": "sup-a",
                                        "resolve_reason": "bearing replaced"})
    result = await _run(acts, NotifyRequest(alert=resolved, step="resolved",
                                            audience="all_notified", event="resolved"))
    assert result.recipients == ["tech-a"]       # the supervisor was never notified
    last = receiver.messages("acme/tech-a")[-1]
    assert last["title"].startswith("RESOLVED COMP-0001 frame vibration WARNING")
    assert "Resolved by sup-a: bearing replaced" in last["message"]
    assert "/a/" not in last["message"] and "Acknowledge" not in last["message"]
    assert len(smtp.messages) == 2


async def test_retried_activity_never_sends_twice(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        smtp: SmtpSink, settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    req = NotifyRequest(alert=alert, step="opened", audience="technicians", event="opened")
    for _ in range(3):
        result = await _run(acts, req)
        assert result.delivered == 2
    assert len(receiver.messages("acme/tech-a")) == 1 and len(smtp.messages) == 1
    assert len(_rows(conn)) == 2


async def test_one_failing_channel_does_not_block_the_other(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        smtp: SmtpSink, settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    receiver.fail["/acme/tech-a"] = 1
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    req = NotifyRequest(alert=alert, step="opened", audience="technicians", event="opened")
    with pytest.raises(ApplicationError) as err:
        await _run(acts, req)
    assert err.value.type == "NotificationDeliveryFailed" and not err.value.non_retryable
    assert "tech-a/json" in str(err.value) and "127.0.0.1" not in str(err.value)
    assert len(smtp.messages) == 1               # email went out despite the failing webhook
    assert await _run(acts, req) == NotifyResult(delivered=2, failed=0, recipients=["tech-a"])
    assert len(smtp.messages) == 1               # and was not sent again
    assert sorted(_rows(conn)) == [("opened", "tech-a", "json", 1, "failed"),
                                   ("opened", "tech-a", "json", 2, "sent"),
                                   ("opened", "tech-a", "mailto", 1, "sent")]


async def test_failed_deliveries_record_the_real_reason_scrubbed_and_log_nothing_raw(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        smtp: SmtpSink, settings: Settings, signer: LinkSigner,
        caplog: pytest.LogCaptureFixture) -> None:
    alert = insert_alert(conn)
    receiver.fail["/acme/tech-a"] = 1
    smtp.reject = ("554 5.7.1 Message rejected: spam score too high for tech-a@example.com, "
                   "call +1 (432) 555-0188")
    caplog.set_level(logging.DEBUG)
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    req = NotifyRequest(alert=alert, step="opened", audience="technicians", event="opened")
    with pytest.raises(ApplicationError) as err:
        await _run(acts, req)
    errors = dict(conn.execute("SELECT channel, error FROM notifications WHERE status = "
                               "'failed'").fetchall())
    assert set(errors) == {"json", "mailto"}
    assert "error=500" in errors["json"], errors
    assert "554" in errors["mailto"] and "spam score too high" in errors["mailto"], errors
    personal = ["tech-a@example.com", "555-0188", "127.0.0.1", "acme/tech-a"]
    # the worker's own log (the receivers' and HTTP library's debug lines are not ours)
    ours = "\n".join(r.getMessage() for r in caplog.records
                     if r.name.split(".")[0] in ("apprise", "activities", "altaviz",
                                                 "temporalio"))
    for text in [*errors.values(), str(err.value), ours]:
        assert "Apprise returned False" not in text
        for value in personal:
            assert value not in text, (value, text)
    assert not [r for r in caplog.records if r.name.startswith("apprise")]


async def test_invalid_stored_url_is_recorded_and_not_retried(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    with conn.transaction():
        conn.execute("UPDATE contacts SET apprise_urls = ARRAY['nosuch://user:Pw9@x', %s] "
                     "WHERE contact_id = 'tech-a'", [receiver.url("acme/tech-a")])
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    result = await _run(acts, NotifyRequest(alert=alert, step="opened",
                                            audience="technicians", event="opened"))
    assert (result.delivered, result.failed) == (1, 1)
    errors = conn.execute("SELECT channel, error FROM notifications WHERE status = 'failed'"
                          ).fetchall()
    assert errors == [("nosuch", "invalid or unsupported Apprise URL (nosuch)")]


def test_short_form_fits_an_sms_and_keeps_the_link(signer: LinkSigner) -> None:
    from tests.notify.conftest import BREACH_HOUR

    alert = AlertState(alert_id="alert/acme/COMP-0003/vib:1", workflow_id="w", org_id="acme",
                       compressor_id="COMP-0003", site_id="EF-01", rule_id="vib",
                       metric="vibration_frame_mm_s", value=12.6, threshold=12.0,
                       severity="critical", breach_hour=BREACH_HOUR, opened_at=BREACH_HOUR,
                       diagnosis="bearing wear suspected " * 8)
    code, _ = signer.issue_short(org_id="acme", alert_id=alert.alert_id,
                                 contact_id="tech-with-a-long-id", action="ack")
    url = f"https://alerts.example.com/a/acme/{code}"
    msg = render(alert, "opened", MessageContext(site_name="Karnes 1", basin="Eagle Ford"),
                 ack_url=url)
    assert len(msg.short) <= SMS_LIMIT and msg.short.endswith(f" Ack: {url}")
    assert len(url) < 60
    # Apprise puts the title in front of an SMS: the body does not repeat it
    assert msg.short.startswith("New alert. Likely: bearing wear") and "COMP-0003" not in \
        msg.short
    assert msg.body_for("sns") == msg.short and msg.body_for("mailto") == msg.full


def test_escalated_alert_names_the_limit_its_value_crossed() -> None:
    """Promoted to critical by the timer, the value still crossed only the warning limit."""
    from tests.notify.conftest import BREACH_HOUR

    alert = AlertState(alert_id="alert/acme/COMP-0003/spread:1", workflow_id="w", org_id="acme",
                       compressor_id="COMP-0003", site_id="EF-01", rule_id="spread",
                       metric="bearing_spread_f", value=27.2, threshold=20.0,
                       threshold_severity="warning", severity="critical",
                       breach_hour=BREACH_HOUR, opened_at=BREACH_HOUR,
                       escalated_at=BREACH_HOUR)
    msg = render(alert, "escalated", MessageContext(site_name="Karnes 1", basin="Eagle Ford"))
    assert msg.title == ("ESCALATED COMP-0003 main-bearing spread CRITICAL 27.2 °F "
                         "(warning limit 20)")
    assert "critical limit" not in msg.title + msg.full


async def test_rule_basis_and_checks_come_from_the_loaded_rule(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        settings: Settings, signer: LinkSigner) -> None:
    with conn.transaction():
        rs = conn.execute(
            "INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content) "
            "VALUES (NULL, 1, 'h', 'test', '{}') RETURNING rule_set_id").fetchone()
        assert rs is not None
        conn.execute(
            "INSERT INTO alert_rules VALUES (%s, 'vibration_frame_high', 'vibration_frame_mm_s',"
            " 'threshold', %s)",
            [rs[0], '{"basis": "Brun & Kurz (2019) p.182, ISO 20816-8 lineage", '
                    '"checks": ["Check frame bolts", "Pull an oil sample"]}'])
    alert = insert_alert(conn).model_copy(update={"rule_set_id": rs[0]})
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    await _run(acts, NotifyRequest(alert=alert, step="opened", audience="technicians",
                                   event="opened"))
    body = receiver.messages("acme/tech-a")[0]["message"]
    assert "Why this limit: Brun & Kurz (2019) p.182, ISO 20816-8 lineage" in body
    assert "- Check frame bolts\n- Pull an oil sample" in body


# --- real Temporal retries ----------------------------------------------------------------

@workflow.defn(name="NotifyOnceTest", sandboxed=False)
class NotifyOnceTest:
    """Test-only workflow: runs the notify activity with a fast retry policy."""

    @workflow.run
    async def run(self, req: NotifyRequest) -> NotifyResult:
        return await workflow.execute_activity(
            "notify", req, result_type=NotifyResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100),
                                     backoff_coefficient=2.0, maximum_attempts=5))


@pytest.fixture(scope="module")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    path = shutil.which("temporal-test-server") or shutil.which(
        "temporal-test-server", path=os.path.dirname(sys.executable))
    if path is None:
        pytest.skip("temporal-test-server is not installed")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=path, data_converter=pydantic_data_converter)
    yield env
    await env.shutdown()


async def test_receiver_failing_twice_gives_three_attempts_one_delivery(
        ts_env: WorkflowEnvironment, conn: psycopg.Connection[Any], loaded: ContactsFile,
        receiver: HttpReceiver, smtp: SmtpSink, settings: Settings,
        signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    receiver.fail["/acme/tech-a"] = 2
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    queue = f"notify-{uuid.uuid4().hex[:8]}"
    async with Worker(ts_env.client, task_queue=queue, workflows=[NotifyOnceTest],
                      activities=[acts.notify], workflow_runner=UnsandboxedWorkflowRunner()):
        result = await ts_env.client.execute_workflow(
            "NotifyOnceTest", NotifyRequest(alert=alert, step="opened",
                                            audience="technicians", event="opened"),
            id=f"notify-{uuid.uuid4().hex}", task_queue=queue, result_type=NotifyResult)
    assert result.delivered == 2 and result.failed == 0
    assert receiver.attempts.count("/acme/tech-a") == 3
    assert len(receiver.messages("acme/tech-a")) == 1
    assert len(smtp.messages) == 1               # the healthy channel: once, not three times
    json_rows = conn.execute("SELECT attempt, status FROM notifications WHERE channel = 'json' "
                             "ORDER BY attempt").fetchall()
    assert json_rows == [(1, "failed"), (2, "failed"), (3, "sent")]


async def test_trend_leaves_out_the_hour_the_unit_stopped(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        settings: Settings, signer: LinkSigner) -> None:
    """Vibration near zero in the hour a unit stops is not the trend falling."""
    alert = insert_alert(conn, value=12.6, threshold=12.0)
    insert_trend(conn, [10.3, 10.8, 11.2, 11.7, 12.6, 0.02], stopped=frozenset({5}))
    with tenant(conn, "acme"):
        ctx = load_context(conn, alert.model_copy(update={
            "last_breach_hour": alert.breach_hour}))
    assert [v for _, v in ctx.trend] == [10.3, 10.8, 11.2, 11.7, 12.6]
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    await _run(acts, NotifyRequest(alert=alert, step="opened", audience="technicians",
                                   event="opened"))
    body = receiver.messages("acme/tech-a")[0]["message"]
    assert "Trend over running hours: 10.3 → 10.8 → 11.2 → 11.7 → 12.6 mm/s, rising ↑ 2.3" \
        in body
    assert "0.02" not in body and "falling" not in body and " > " not in body


async def test_short_link_is_signed_single_use_and_refuses_alterations(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        settings: Settings, signer: LinkSigner) -> None:
    alert = insert_alert(conn)
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    await _run(acts, NotifyRequest(alert=alert, step="opened", audience="technicians",
                                   event="opened"))
    body = receiver.messages("acme/tech-a")[0]["message"]
    m = LINK.search(body)
    assert m is not None
    org, code = m.group(1), m.group(2)
    claims = _claims(conn, signer, body)
    assert claims.token_id.startswith("s-") and claims.contact_id == "tech-a"
    with tenant(conn, org):
        record = find_short_link(conn, code)
    assert record is not None
    # the table holds no signature: its row alone does not make the link
    assert code[12:] not in str(conn.execute("SELECT * FROM short_links").fetchall())
    problems = {
        "another signature": (org, code[:12] + ("A" if code[12] != "A" else "B") + code[13:],
                              record),
        "row altered to another recipient": (org, code, replace(record, contact_id="sup-a")),
        "row altered to a later expiry": (org, code, replace(
            record, expires_at=record.expires_at + timedelta(days=30))),
        "another organization in the path": ("bravo", code, record),
        "unknown id": (org, code, None),
        "key no longer configured": (org, code, replace(record, key_id="gone")),
    }
    for name, (o, c, r) in problems.items():
        with pytest.raises(LinkError) as info:
            signer.verify_short(o, c, r, action="ack")
        assert info.value.problem == "forged", name
    with pytest.raises(LinkError) as info:
        signer.verify_short(org, code, record, action="ack",
                             now=record.expires_at + timedelta(seconds=1))
    assert info.value.problem == "expired"
    with pytest.raises(LinkError) as info:
        signer.verify_short(org, code, record, action="view")
    assert info.value.problem == "wrong_action"
    with pytest.raises(LinkError) as info:
        signer.verify_short(org, code[:-1], record, action="ack")
    assert info.value.problem == "malformed"
    # a rotated key still verifies the links it signed
    rotated = LinkSigner(b"a-brand-new-link-secret-0123456789abcdef", previous=[SECRET])
    assert rotated.verify_short(org, code, record, action="ack").contact_id == "tech-a"
    # another organization reads nothing of acme's short links
    with tenant(conn, "bravo"):
        assert find_short_link(conn, code) is None


async def test_a_data_missing_alert_reads_as_hours_without_data(
        conn: psycopg.Connection[Any], loaded: ContactsFile, receiver: HttpReceiver,
        settings: Settings, signer: LinkSigner) -> None:
    """The rule's kind comes from the loaded rule set: a no-data rule's value is hours
    without data, never a speed, and a silent unit has no trend."""
    with conn.transaction():
        rs = conn.execute(
            "INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content) "
            "VALUES (NULL, 1, 'h', 'test', '{}') RETURNING rule_set_id").fetchone()
        assert rs is not None
        conn.execute(
            "INSERT INTO alert_rules VALUES (%s, 'data_missing', 'speed_rpm', 'no_data', %s)",
            [rs[0], '{"kind": "no_data", "basis": "3 h without data warns", '
                    '"checks": ["Check the field gateway"]}'])
    alert = insert_alert(conn, rule="data_missing", metric="speed_rpm", value=3.0,
                         threshold=3.0, diagnosis="").model_copy(
                             update={"rule_set_id": rs[0]})
    insert_trend(conn, [1180.0, 1190.0], metric="speed_rpm")
    acts = NotificationActivities(conn.info.dsn, settings, signer=signer)
    await _run(acts, NotifyRequest(alert=alert, step="opened", audience="technicians",
                                   event="opened"))
    [msg] = receiver.messages("acme/tech-a")
    assert msg["title"] == "COMP-0001 no data for 3 hours WARNING"
    assert "No readings from the unit for 3 hours (warning after 3 hours)." in msg["message"]
    assert "rpm" not in msg["title"] + msg["message"]
    assert "Trend" not in msg["message"]
