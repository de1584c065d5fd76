"""Silence matchers, chained silences, recurring windows in local site time, inhibition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from altaviz.core.silences import (
    MaintenanceWindow,
    Matchers,
    Recurrence,
    Silence,
    inhibited,
    parse_matchers,
    silenced_until,
    window_until,
)

T = datetime(2026, 3, 10, 12, tzinfo=UTC)


def silence(sid: int, start: float, end: float, **m: object) -> Silence:
    return Silence(silence_id=sid, org_id="acme", matchers=Matchers.model_validate(m),
                   starts_at=T + timedelta(hours=start), ends_at=T + timedelta(hours=end),
                   created_by="a", comment="c")


def test_matchers_every_given_list_must_match() -> None:
    m = parse_matchers(["compressor=C1,C2", "severity=warning"])
    assert m.matches(compressor_id="C2", site_id="S", rule_id="r", severity="warning")
    assert not m.matches(compressor_id="C2", site_id="S", rule_id="r", severity="critical")
    assert not m.matches(compressor_id="C3", site_id="S", rule_id="r", severity="warning")
    with pytest.raises(ValueError, match="at least one matcher"):
        parse_matchers([])
    with pytest.raises(ValueError, match="unknown rule 'x'"):
        parse_matchers(["rule=x"], known_rules=["flow_deficit"])


def test_overlapping_silences_chain_and_inactive_ones_do_not() -> None:
    labels = dict(compressor_id="C1", site_id="S", rule_id="r", severity="warning")
    s = [silence(1, -1, 2, compressor_ids=("C1",)), silence(2, 1.5, 5, site_ids=("S",)),
         silence(3, 6, 8, compressor_ids=("C1",)), silence(4, -1, 9, compressor_ids=("C9",))]
    until, ids = silenced_until(s, at=T, **labels)
    assert until == T + timedelta(hours=5) and ids == [1, 2]
    assert silenced_until(s, at=T + timedelta(hours=5), **labels) == (None, [])


def test_second_tuesday_of_the_month_in_local_time_across_dst() -> None:
    rec = Recurrence(weekday="tuesday", start="06:00", end="14:00",
                     timezone="America/Chicago", nth_of_month=2)
    w = MaintenanceWindow(org_id="acme", site_id="S", starts_at=datetime(2026, 1, 1, tzinfo=UTC),
                          ends_at=datetime(2027, 1, 1, tzinfo=UTC), reason="valves",
                          recurrence=rec)
    spans = w.spans((datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)))
    # 2026-02-10 (CST, UTC-6) and 2026-03-10 (CDT since 03-08, UTC-5)
    assert spans == [(datetime(2026, 2, 10, 12, tzinfo=UTC), datetime(2026, 2, 10, 20, tzinfo=UTC)),
                     (datetime(2026, 3, 10, 11, tzinfo=UTC), datetime(2026, 3, 10, 19, tzinfo=UTC))]
    until, _ = window_until([w], compressor_id="C1", site_id="S", at=T)
    assert until == datetime(2026, 3, 10, 19, tzinfo=UTC)
    assert window_until([w], compressor_id="C1", site_id="other", at=T) == (None, [])


def test_every_other_week_counts_from_the_first_day() -> None:
    rec = Recurrence(weekday="tuesday", start="22:00", end="02:00", timezone="UTC",
                     every_weeks=2)
    w = MaintenanceWindow(org_id="acme", compressor_id="C1",
                          starts_at=datetime(2026, 3, 3, tzinfo=UTC),
                          ends_at=datetime(2026, 4, 1, tzinfo=UTC), reason="x", recurrence=rec)
    starts = [b.day for b, _ in w.spans((w.starts_at, w.ends_at))]
    assert starts == [3, 17, 31]
    assert w.active_at(datetime(2026, 3, 18, 1, tzinfo=UTC)) == datetime(2026, 3, 18, 2,
                                                                          tzinfo=UTC)


def test_recurrence_rejects_bad_input() -> None:
    with pytest.raises(ValidationError, match="exactly one of every_weeks and nth_of_month"):
        Recurrence(weekday="tuesday", start="06:00", end="14:00", timezone="UTC")
    with pytest.raises(ValidationError, match="unknown time zone"):
        Recurrence(weekday="tuesday", start="06:00", end="14:00", timezone="Mars/Base",
                   every_weeks=1)


def test_inhibition_only_at_the_hours_the_unit_is_stopped() -> None:
    h = [T + timedelta(hours=i) for i in range(3)]
    breaches = [("C1", "flow_deficit", h[0]),      # before the stop: kept
                ("C1", "unit_stopped", h[1]), ("C1", "flow_deficit", h[1]),
                ("C2", "flow_deficit", h[1]),      # another unit: kept
                ("C1", "discharge_temp_high", h[1])]  # not listed: kept
    assert inhibited(breaches, {"unit_stopped": ("flow_deficit",)}) == {2}
