"""Defects messages once had, each pinned so it cannot come back: a data-missing alert read
as a speed of "3 rpm", a trend ended on the hour the unit stopped and was written with ">",
and an escalation after one minute said "after 0.02 h"."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from altaviz.core.messages import (
    MessageContext,
    duration,
    format_value,
    metric_label,
    number,
    render,
    trend_text,
)
from altaviz.core.payloads import AlertState

HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)


def _no_data(hours: float, metric: str = "speed_rpm") -> AlertState:
    return AlertState(alert_id="a", workflow_id="w", org_id="acme", compressor_id="COMP-0003",
                      site_id="EF-01", rule_id="data_missing", metric=metric, value=hours,
                      threshold=3.0, severity="warning", breach_hour=HOUR, opened_at=HOUR)


@pytest.mark.parametrize("hours", [1.0, 3.0, 12.0, 47.0, 200.0])
def test_a_data_missing_value_is_hours_without_data_never_a_reading(hours: float) -> None:
    ctx = MessageContext(rule_kind="no_data",
                         trend=((HOUR - timedelta(hours=1), 1180.0), (HOUR, 1190.0)))
    msg = render(_no_data(hours), "opened", ctx, ack_url="https://x/a/acme/c")
    everything = "\n".join((msg.title, msg.short, msg.full))
    assert "rpm" not in everything and "speed" not in everything
    assert "Trend" not in everything           # a silent unit has no trend to show
    assert f"no data for {duration(hours)}" in msg.title
    assert f"No readings from the unit for {duration(hours)}" in msg.full


def test_a_silent_sensor_is_a_data_quality_notice_not_a_reading() -> None:
    msg = render(_no_data(5.0, "oil_pressure_psig"), "opened",
                 MessageContext(rule_kind="no_data"))
    assert "psig" not in msg.title + msg.full
    assert msg.title == "COMP-0003 no oil pressure data for 5 hours WARNING"
    assert "Data quality: the oil pressure sensor has sent nothing for 5 hours" in msg.full


def test_trend_arrows_and_direction_always_match_the_values() -> None:
    rng = random.Random(7)
    for _ in range(500):
        values = [round(rng.uniform(0.5, 400), rng.choice([0, 1, 2]))
                  for _ in range(rng.randint(2, 6))]
        trend = tuple((HOUR - timedelta(hours=len(values) - 1 - i), v)
                      for i, v in enumerate(values))
        text = trend_text(trend, "vibration_frame_mm_s")
        assert ">" not in text and "<" not in text
        assert text.startswith(" → ".join(number(v) for v in values) + " mm/s, ")
        first, last = values[0], values[-1]
        if abs(last - first) / max(first, last) < 0.02:
            assert "steady" in text
        elif last > first:
            assert "rising ↑" in text and "falling" not in text
        else:
            assert "falling ↓" in text and "rising" not in text


@pytest.mark.parametrize(("hours", "text"), [
    (1 / 60, "1 minute"), (0.016666666666666666, "1 minute"), (0.5, "30 minutes"),
    (1.0, "1 hour"), (1.5, "1.5 hours"), (4.0, "4 hours"), (47.0, "47 hours"),
    (72.0, "3 days"), (0.0, "0 minutes")])
def test_durations_are_minutes_hours_or_days(hours: float, text: str) -> None:
    assert duration(hours) == text


def test_escalation_after_a_minute_says_a_minute() -> None:
    alert = _no_data(3.0).model_copy(update={"escalation_delay_hours": 0.016666666666666666})
    msg = render(alert, "escalated", MessageContext(rule_kind="no_data"))
    assert "Not acknowledged after 1 minute" in msg.full and "0.02" not in msg.full


@pytest.mark.parametrize(("metric", "label", "value", "shown"), [
    ("vibration_frame_mm_s", "frame vibration", 12.6, "12.6 mm/s"),
    ("stage3_discharge_temp_f", "stage 3 discharge temp", 352.44, "352 °F"),
    ("stage2_ratio", "stage 2 ratio", 3.14159, "3.14"),
    ("oil_pressure_psig", "oil pressure", 10.823333333333332, "10.8 psig"),
    ("flow_mmscfd", "flow", 4.0, "4 MMSCFD"),
])
def test_metrics_have_human_names_units_and_rounding(
        metric: str, label: str, value: float, shown: str) -> None:
    assert metric_label(metric) == label
    assert format_value(value, metric) == shown
