"""The alert timeline in domain terms: each kind of record becomes a sentence with names,
channels, units and durations a supervisor reads; machine-level floats never leak."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from altaviz.app.web.timeline import build, channel_name, duration, observed, with_unit
from altaviz.app.web.views import what

T = datetime(2026, 3, 2, 10, tzinfo=UTC)
ALERT = {"metric": "vibration_frame_mm_s", "value": 10.823333333333332, "threshold": 8.0,
         "severity": "warning", "resolve_reason": None}


def _at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def test_durations_are_minutes_hours_or_days() -> None:
    assert [duration(h) for h in (0.016666666666666666, 0.5, 4.0, 2.5, 30, 72, 80)] == [
        "1 min", "30 min", "4 h", "2 h 30 min", "30 h", "3 days", "3.3 days"]


def test_values_are_rounded_with_units_and_channels_named_as_people_say() -> None:
    assert with_unit(10.823333333333332, "vibration_frame_mm_s") == "10.8 mm/s"
    assert with_unit(None, "speed_rpm") == "no data"
    assert [channel_name(c) for c in ("mailto", "json", "slack", None)] == [
        "email", "webhook", "slack", "unknown channel"]


def test_every_record_becomes_one_sentence_in_time_order() -> None:
    events = [
        {"event_type": "opened", "occurred_at": _at(0), "actor": "rules",
         "details": {"value": 10.823333333333332, "threshold": 8.0, "severity": "warning"}},
        {"event_type": "breach_repeated", "occurred_at": _at(60), "actor": "rules",
         "details": {}},
        {"event_type": "escalated", "occurred_at": _at(240), "actor": "timer",
         "details": {"after_hours": 0.016666666666666666}},
        {"event_type": "acknowledged", "occurred_at": _at(250), "actor": "sup-a",
         "details": {"channel": "link", "comment": "on my way"}},
        {"event_type": "cleared", "occurred_at": _at(300), "actor": "rules", "details": {}},
        {"event_type": "resolved", "occurred_at": _at(310), "actor": "sup-a",
         "details": {"reason": "bearing replaced"}},
    ]
    notifications = [
        {"contact_id": "tech-a", "name": "Jo Rivera", "role": "technician", "channel": "mailto",
         "status": "sent", "step": "opened", "attempt": 1, "error": None,
         "attempted_at": _at(1)},
        {"contact_id": "sup-a", "name": "Sam Okafor", "role": "supervisor", "channel": "json",
         "status": "failed", "step": "escalated", "attempt": 1, "error": "HTTP 502",
         "attempted_at": _at(241)},
    ]
    entries = build(ALERT, events, notifications, [])
    assert [(e.kind, e.text) for e in entries] == [
        ("opened", "Opened: frame vibration 10.8 mm/s over the warning limit 8 mm/s"),
        ("notified", "Notified Jo Rivera (technician) by email: delivered"),
        ("escalated", "Escalated to supervisors: not acknowledged after 1 min"),
        ("failed", "Notifying Sam Okafor (supervisor) by webhook about the escalation failed "
                   "(attempt 1)"),
        ("acknowledged", "Acknowledged by Sam Okafor via link"),
        ("cleared", "Cleared: frame vibration back within limits"),
        ("resolved", "Resolved by Sam Okafor"),
    ]
    assert entries[3].detail == "HTTP 502"
    assert entries[4].detail == "“on my way”"
    assert entries[6].detail == "bearing replaced"
    assert all("0.0166" not in e.text and "10.82" not in e.text for e in entries)


def test_queued_and_refused_link_uses_are_shown() -> None:
    uses = [{"contact_id": "tech-a", "name": "Jo Rivera", "action": "ack", "outcome": "queued",
             "used_at": _at(5), "detail": None},
            {"contact_id": "tech-a", "name": "Jo Rivera", "action": "ack",
             "outcome": "released", "used_at": _at(6), "detail": "alert already resolved"},
            {"contact_id": "tech-a", "name": "Jo Rivera", "action": "ack",
             "outcome": "acknowledged", "used_at": _at(7), "detail": None}]
    entries = build(ALERT, [], [], uses)
    assert [e.kind for e in entries] == ["queued", "refused"]
    assert entries[0].text.startswith("Jo Rivera tapped the acknowledge link: queued")


def test_a_data_missing_alert_reads_as_hours_without_data_not_as_its_channel() -> None:
    from altaviz.app.web.timeline import observed

    alert = {"metric": "speed_rpm", "value": 5.0, "threshold": 3.0, "severity": "warning",
             "rule_kind": "no_data"}
    assert observed(alert) == ("no data for 5 h", "3 h")
    (entry,) = build(alert, [{"event_type": "opened", "occurred_at": T, "actor": "rules",
                              "details": {"value": 5.0, "threshold": 3.0}}], [], [])
    assert entry.text == "Opened: no data for 5 h (the warning limit is 3 h)"
    assert "rpm" not in entry.text


def test_a_sensor_offline_alert_reads_as_hours_without_data_and_names_its_channel() -> None:
    alert = {"metric": "oil_pressure_psig", "value": 3.0, "threshold": 3.0,
             "severity": "warning", "rule_kind": "offline"}
    assert observed(alert) == ("no data for 3 h", "3 h")
    assert what(alert) == "oil pressure offline"
    (entry,) = build(alert, [{"event_type": "opened", "occurred_at": T, "actor": "rules",
                              "details": {"value": 3.0, "threshold": 3.0}}], [], [])
    assert entry.text == "Opened: no data for 3 h (the warning limit is 3 h)"
    assert "psig" not in entry.text
