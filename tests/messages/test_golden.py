"""Every kind of message, rendered and compared with a committed golden file.

A golden file holds the title, the SMS form and the full form exactly as a recipient sees
them. When a message is changed on purpose, delete its file and run the test once: it writes
the new one (and fails, so the change is looked at before it is committed).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from altaviz.core.messages import MessageContext, render
from altaviz.core.payloads import AlertState, UnitStop

GOLDEN = Path(__file__).parent / "golden"
HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)
ACK = "https://alerts.example.com/a/acme/8vfu0KdbVl-n8Mr05YUJqtKx"
VIEW = "https://alerts.example.com/alerts/alert%2Facme%2FCOMP-0022?token=v2.abc.def.ghi"
CHECKS = ("Check mounting bolts, foundation and alignment.",
          "Compare with bearing temperatures.")


def _alert(**changes: Any) -> AlertState:
    base: dict[str, Any] = dict(
        alert_id="alert/acme/COMP-0022/vibration_frame_high/20260302T10", workflow_id="w",
        org_id="acme", compressor_id="COMP-0022", site_id="PB-01",
        rule_id="vibration_frame_high", metric="vibration_frame_mm_s", value=12.6,
        threshold=12.0, severity="critical", breach_hour=HOUR, opened_at=HOUR,
        diagnosis="bearing wear suspected")
    base.update(changes)
    return AlertState(**base)


def _trend(*values: float) -> tuple[tuple[datetime, float], ...]:
    return tuple((HOUR - timedelta(hours=len(values) - 1 - i), v) for i, v in enumerate(values))


LEVEL = MessageContext(site_name="Pecos 1", basin="Permian", model="Ariel JGK/4",
                       basis="Frame vibration above 12 mm/s RMS is the maker's alarm level.",
                       checks=CHECKS, trend=_trend(10.3, 10.8, 11.2, 11.7, 12.6),
                       rule_kind="threshold")
NO_DATA = MessageContext(site_name="Karnes 1", basin="Eagle Ford", model="Ariel JGK/4",
                         basis="(proposed) 3 h without data warns, 12 h is critical.",
                         checks=("Check the field gateway and its cellular/satellite link.",
                                 "Call the site to confirm whether the unit is running."),
                         trend=_trend(1180, 1190, 1185), rule_kind="no_data")

CASES: dict[str, tuple[AlertState, str, MessageContext, str | None, str | None]] = {
    "opened": (_alert(), "opened", LEVEL, ACK, None),
    "opened_warning_falling": (
        _alert(metric="oil_pressure_psig", rule_id="oil_pressure_low", value=31.46,
               threshold=35.0, severity="warning", diagnosis="oil pump wear or low oil level"),
        "opened", MessageContext(site_name="Pecos 1", basin="Permian", rule_kind="threshold",
                                 trend=_trend(44.2, 41.0, 37.9, 34.1, 31.46)), ACK, None),
    "opened_temperature_steady": (
        _alert(metric="stage3_discharge_temp_f", rule_id="discharge_temp_high", value=352.4,
               threshold=350.0, severity="critical", diagnosis=""),
        "opened", MessageContext(site_name="Pecos 1", rule_kind="threshold",
                                 trend=_trend(351.0, 352.9, 352.4)), ACK, None),
    "severity_raised": (_alert(), "severity_raised", LEVEL, ACK, None),
    "escalated": (
        _alert(severity="critical", threshold=8.0, threshold_severity="warning", value=9.1,
               escalated_at=HOUR + timedelta(hours=4)),
        "escalated", replace(LEVEL, trend=_trend(8.1, 8.4, 8.8, 9.1)), ACK, VIEW),
    "escalated_after_one_minute": (
        _alert(escalation_delay_hours=1 / 60), "escalated", LEVEL, ACK, VIEW),
    "reminder": (_alert(), "reminder", LEVEL, ACK, None),
    "cleared": (_alert(condition_state="cleared", state="cleared_unacknowledged"), "cleared",
                LEVEL, ACK, None),
    "resolved": (_alert(state="resolved", ack_state="acknowledged", acknowledged_by="tech-a",
                        resolved_by="sup-a", resolve_reason="bearing replaced"),
                 "resolved", LEVEL, ACK, None),
    "data_missing": (
        _alert(rule_id="data_missing", metric="speed_rpm", value=3.0, threshold=3.0,
               severity="warning", diagnosis="No hourly aggregates from this compressor: "
               "gateway, communications or the unit itself may be down."),
        "opened", NO_DATA, ACK, None),
    "data_missing_critical_days": (
        _alert(rule_id="data_missing", metric="*", value=60.0, threshold=12.0,
               severity="critical", diagnosis=""),
        "reminder", MessageContext(rule_kind="no_data"), ACK, None),
    "sensor_missing": (
        _alert(rule_id="bearing_sensor_silent", metric="bearing_temp_max_f", value=5.0,
               threshold=4.0, severity="warning", diagnosis=""),
        "opened", MessageContext(site_name="Pecos 1", rule_kind="no_data"), ACK, None),
    "sensor_stuck": (
        _alert(rule_id="stage2_suction_pressure_stuck", metric="stage2_suction_psig",
               value=263.0, threshold=None, severity="warning",
               last_breach_hour=HOUR + timedelta(hours=2),
               diagnosis="The reading has not moved while the unit ran: a frozen transmitter, "
                         "a failed input card or a gateway repeating its last value."),
        "opened", MessageContext(
            site_name="Pecos 1", basin="Permian", model="Ariel JGK/4", rule_kind="stuck",
            unchanged_hours=6, trend=_trend(263.0, 263.0, 263.0)), ACK, None),
    "sensor_offline": (
        _alert(rule_id="oil_pressure_offline", metric="oil_pressure_psig", value=3.0,
               threshold=3.0, severity="warning", diagnosis=""),
        "opened", MessageContext(site_name="Pecos 1", basin="Permian", model="Ariel JGK/4",
                                 rule_kind="offline"), ACK, None),
    "sensor_stuck_beyond_alarm": (
        _alert(rule_id="oil_pressure_stuck", metric="oil_pressure_psig", value=41.0,
               threshold=None, severity="warning", diagnosis=""),
        "opened", MessageContext(site_name="Pecos 1", rule_kind="stuck", unchanged_hours=6,
                                 alarm=("below", 50.0)), ACK, None),
    "unit_stopped": (
        _alert(rule_id="unit_stopped", metric="speed_rpm", value=0.0, threshold=50.0,
               severity="warning", breach_hour=HOUR + timedelta(hours=5),
               opened_at=HOUR + timedelta(hours=6, minutes=5),
               diagnosis="Unit stopped outside a planned maintenance window.",
               stop=UnitStop(stopped_at=HOUR + timedelta(hours=4, minutes=20), speed_rpm=0.0,
                             discharge_temp_f=348.4)),
        "opened", MessageContext(
            site_name="Pecos 1", basin="Permian", model="Ariel JGK/4", rule_kind="threshold",
            checks=("Call the site to confirm why the unit stopped (shutdown alarm, trip, "
                    "operator stop).",
                    "Check the panel's first-out annunciator before restarting."),
            trend=_trend(1180, 1190, 1185)), ACK, None),
}


def _text(case: str) -> str:
    alert, event, ctx, ack, view = CASES[case]
    msg = render(alert, event, ctx, ack_url=ack, view_url=view)
    return f"TITLE: {msg.title}\n\nSHORT: {msg.short}\n\nFULL:\n{msg.full}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_message_matches_its_golden_file(case: str) -> None:
    path = GOLDEN / f"{case}.txt"
    text = _text(case)
    if not path.exists():
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"wrote {path}: read it, then commit it")
    assert text == path.read_text(encoding="utf-8")


def test_every_event_and_kind_has_a_golden_file() -> None:
    events = {c[1] for c in CASES.values()}
    assert events == {"opened", "escalated", "severity_raised", "reminder", "cleared",
                      "resolved"}
    kinds = {(c[2].rule_kind, c[0].metric in ("speed_rpm", "*")) for c in CASES.values()}
    assert {("threshold", False), ("no_data", True), ("no_data", False),
            ("stuck", False), ("offline", False)} <= kinds
    assert {p.stem for p in GOLDEN.glob("*.txt")} == set(CASES)
