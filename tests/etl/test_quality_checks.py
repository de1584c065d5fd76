"""The four data-quality checks, value by value, on hand-made landing files: completeness
(missing share per compressor-hour, flagged hours listed), consistency (quarantined rows),
accuracy (wrong values per channel in steady running) and freshness (the later of the
watermark and the batch's last reading), with their thresholds, verdicts and details as
`altaviz dq report` shows them."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, reading, series, write_landing
from tests.etl.test_pipeline import scenario


def _gappy(landing: Path) -> None:
    """COMP-0004 (bravo): hour 0 complete, hour 1 half, hour 2 silent, hour 3 complete with
    its last reading a quarter second late."""
    rows = [*series("COMP-0004", T0, 1),
            *[reading("COMP-0004", T0 + timedelta(hours=1, minutes=10 * i)) for i in range(3)],
            *[reading("COMP-0004", T0 + timedelta(hours=3, minutes=10 * i)) for i in range(5)],
            reading("COMP-0004", T0 + timedelta(hours=3, minutes=50, milliseconds=250))]
    write_landing(landing, rows, T0 + timedelta(hours=3, minutes=55), org="bravo")


def _checks(conn: psycopg.Connection[Any], run_id: str) -> dict[tuple[str, str], Any]:
    with conn.transaction():
        rows = conn.execute(
            "SELECT org_id, compressor_id, check_type, measured, threshold, passed, details "
            "FROM data_quality_checks WHERE run_id = %s", [run_id]).fetchall()
    return {(r[1], r[2]): (r[0], *r[3:]) for r in rows}


def _fresh(org: str, last: datetime, as_of: datetime, stamp: str) -> tuple[Any, ...]:
    minutes = (as_of - last).total_seconds() / 60
    limit = 60.0 + 30.0   # the default hourly upload cadence plus the default grace
    return (org, minutes, limit, minutes <= limit,
            {"last_reading_at": stamp, "as_of": as_of.isoformat(), "grace_minutes": 30})


def _channels(org: str, readings: int, **missing: int) -> dict[str, Any]:
    """The channels and sensor-offline checks of a unit that ran for all its readings."""
    worst = max(missing.values(), default=0) / readings
    return {"channels": (org, worst, 0.05, worst <= 0.05,
                         {"readings": readings, "missing": missing}),
            "sensor_offline": (org, 0.0, 0.0, True,
                               {"running_readings": readings, "offline": []})}


def _accurate(org: str, readings: int) -> tuple[Any, ...]:
    """The accuracy check of a unit that ran steadily for all its readings, no value wrong."""
    return (org, 0.0, 0.02, True, {"readings": readings, "judged": readings,
                                   "worst_channel": None, "channels": {}})


def _with_channels(checks: dict[tuple[str, str], Any],
                   units: dict[str, dict[str, Any]]) -> dict[tuple[str, str], Any]:
    return {**checks, **{(comp, kind): v for comp, c in units.items() for kind, v in c.items()}}


def test_each_check_measures_what_it_says(settings: Settings, db_url: str, fleet: Fleet,
                                          conn: psycopg.Connection[Any]) -> None:
    scenario(settings.landing_path)
    _gappy(settings.landing_path)
    as_of = T0 + timedelta(hours=4)
    run_pipeline(settings, db_url, run_id="r1", as_of=as_of)
    checks = _checks(conn, "r1")
    three = {"hours": 3, "hours_flagged": 0, "flagged_hours": []}
    last = T0 + timedelta(hours=2, minutes=50)
    stamp = "2025-03-10T02:50:00+00:00"
    four = {"hours": 4, "hours_flagged": 1, "flagged_hours": ["2025-03-10T03:00Z"]}
    assert checks == _with_channels({
        # 18 valid readings each, plus readings with a channel missing (kept): COMP-0001 two
        # in hour 3 (null oil temperature, speed out of range), COMP-0003 one (a text flow).
        # COMP-0001 also sent 2 rows quarantined with its organization (a timestamp days
        # ahead, a conflicting duplicate); the unknown and the null compressor have no
        # organization to count against
        ("COMP-0001", "completeness"): ("acme", pytest.approx(1 / 6), 0.05, False, four),
        ("COMP-0001", "consistency"): ("acme", 2 / 22, 0.01, False,
                                       {"rows": 22, "quarantined": 2}),
        ("COMP-0001", "accuracy"): _accurate("acme", 20),
        ("COMP-0001", "freshness"): _fresh("acme", T0 + timedelta(hours=3, minutes=10), as_of,
                                           "2025-03-10T03:10:00+00:00"),
        ("COMP-0002", "completeness"): ("acme", 0.0, 0.05, True, three),
        ("COMP-0002", "consistency"): ("acme", 0.0, 0.01, True, {"rows": 18, "quarantined": 0}),
        ("COMP-0002", "accuracy"): _accurate("acme", 18),
        ("COMP-0002", "freshness"): _fresh("acme", last, as_of, stamp),
        ("COMP-0003", "completeness"): ("bravo", pytest.approx(5 / 24), 0.05, False, four),
        ("COMP-0003", "consistency"): ("bravo", 0.0, 0.01, True, {"rows": 19, "quarantined": 0}),
        ("COMP-0003", "accuracy"): _accurate("bravo", 19),
        ("COMP-0003", "freshness"): _fresh("bravo", T0 + timedelta(hours=3), as_of,
                                           "2025-03-10T03:00:00+00:00"),
        # hours 0-3: missing 0, 1/2, 1 and 0
        ("COMP-0004", "completeness"): ("bravo", 1.5 / 4, 0.05, False, {
            "hours": 4, "hours_flagged": 2,
            "flagged_hours": ["2025-03-10T01:00Z", "2025-03-10T02:00Z"]}),
        ("COMP-0004", "consistency"): ("bravo", 0.0, 0.01, True, {"rows": 15, "quarantined": 0}),
        ("COMP-0004", "accuracy"): _accurate("bravo", 15),
        ("COMP-0004", "freshness"): _fresh(
            "bravo", T0 + timedelta(hours=3, minutes=50, milliseconds=250), as_of,
            "2025-03-10T03:50:00.250000+00:00"),
    }, {
        # the channels each unit left out of a kept reading; the reading without a speed
        # counts as running by its flow
        "COMP-0001": _channels("acme", 20, oil_temp_f=1, speed_rpm=1),
        "COMP-0002": _channels("acme", 18),
        "COMP-0003": _channels("bravo", 19, flow_mmscfd=1),
        "COMP-0004": _channels("bravo", 15)})

    # the next run: only COMP-0004 reports; the others' freshness comes from the watermarks
    write_landing(settings.landing_path, series("COMP-0004", T0 + timedelta(hours=4), 1),
                  T0 + timedelta(hours=4, minutes=55), org="bravo")
    later = T0 + timedelta(hours=5, minutes=7, seconds=30)
    run_pipeline(settings, db_url, run_id="r2", as_of=later)
    checks = _checks(conn, "r2")
    assert checks == {
        ("COMP-0001", "freshness"): _fresh("acme", T0 + timedelta(hours=3, minutes=10), later,
                                           "2025-03-10T03:10:00+00:00"),
        ("COMP-0002", "freshness"): _fresh("acme", last, later, stamp),
        ("COMP-0003", "freshness"): _fresh("bravo", T0 + timedelta(hours=3), later,
                                           "2025-03-10T03:00:00+00:00"),
        ("COMP-0004", "freshness"): _fresh("bravo", T0 + timedelta(hours=4, minutes=50), later,
                                           "2025-03-10T04:50:00+00:00"),
        ("COMP-0004", "completeness"): ("bravo", 0.0, 0.05, True, {
            "hours": 1, "hours_flagged": 0, "flagged_hours": []}),
        ("COMP-0004", "consistency"): ("bravo", 0.0, 0.01, True, {"rows": 6, "quarantined": 0}),
        # judged with the 15 readings of the 5 hours before it, already in silver
        ("COMP-0004", "accuracy"): _accurate("bravo", 6 + 15),
        **{("COMP-0004", kind): v for kind, v in _channels("bravo", 6).items()},
    }


def test_hours_of_a_maintenance_window_are_planned_downtime_not_missing(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    """COMP-0004's half and silent hours (1 and 2) fall in its maintenance window: the
    completeness check passes and says how many hours were planned downtime."""
    _gappy(settings.landing_path)
    with conn.transaction():
        conn.execute("INSERT INTO maintenance_windows (org_id, compressor_id, starts_at,"
                     " ends_at, reason, created_by) VALUES ('bravo', 'COMP-0004', %s, %s,"
                     " 'overhaul', 'sup.amy')", (T0 + timedelta(hours=1),
                                                 T0 + timedelta(hours=3)))
    run_pipeline(settings, db_url, run_id="r1", as_of=T0 + timedelta(hours=4))
    checks = _checks(conn, "r1")
    assert checks[("COMP-0004", "completeness")] == ("bravo", 0.0, 0.05, True, {
        "hours": 4, "hours_flagged": 0, "flagged_hours": [], "planned_hours": 2})
