"""A frozen pressure transmitter, from readings through the ETL to the default rules: the
technician gets a stuck-sensor notice, and the stage ratio computed from the frozen pressure
raises no machine alert; a healthy unit under the same line-pressure swings gets neither.

Both units of ``acme`` live through the same suction swings (a triangle wave, 35 to 65 psig
every 16 hours, at a constant 600 psig pipeline), so their stage ratios move together. On the
evaluated day COMP-0001's stage 2 suction transmitter freezes for 8 hours at the bottom of a
rising leg: its stage 2 ratio, computed from the frozen pressure, falls away from what stage 1
predicts by several percent, the 3% shift a leaking valve would show.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import psycopg

from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from rules.evaluate import evaluate
from rules.loader import DEFAULT_RULES, load_rule_set
from rules.schema import notice_rule_ids
from tests.etl.landing import BASE, T0, reading, write_landing

DAYS = 6
FREEZE = (5 * 24 + 8) * 6         # reading index: day 5, 08:00, the bottom of a rising leg
FROZEN = 8 * 6                    # 8 hours of readings


def _readings(compressor_id: str, seed: int, freeze: bool) -> list[dict[str, Any]]:
    """Ten-minute readings of a two-stage unit at constant speed with live (noisy, 0.1
    resolution) channels; stage pressures follow the suction swing with equal stage ratios."""
    rng = np.random.default_rng(seed)
    n = DAYS * 24 * 6
    t = np.arange(n) / 6.0                                 # hours
    leg = (t % 16.0) / 8.0
    p1 = 35.0 + 30.0 * np.where(leg < 1.0, leg, 2.0 - leg)
    pd2 = 600.0 + rng.normal(0.0, 0.5, n)
    inter = np.sqrt((p1 + 14.7) * (pd2 + 14.7)) - 14.7
    channels = {
        "stage1_suction_psig": p1, "stage1_discharge_psig": inter,
        "stage2_suction_psig": inter - 3.0, "stage2_discharge_psig": pd2}
    rows = []
    for i in range(n):
        values = {k: round(float(v) + rng.normal(0.0, 0.3), 1) for k, v in BASE.items()
                  if k != "speed_rpm"}
        values.update({k: round(float(v[i]) + rng.normal(0.0, 0.2), 1)
                       for k, v in channels.items()})
        values["speed_rpm"] = round(1200.0 + rng.normal(0.0, 2.0))
        rows.append(values)
    if freeze:
        stuck = rows[FREEZE]["stage2_suction_psig"]
        for values in rows[FREEZE:FREEZE + FROZEN]:
            values["stage2_suction_psig"] = stuck
    return [reading(compressor_id, T0 + timedelta(minutes=10 * i), **v)
            for i, v in enumerate(rows)]


def test_a_frozen_suction_transmitter_raises_a_notice_not_a_ratio_alert(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    arrive = T0 + timedelta(days=DAYS, minutes=5)
    write_landing(settings.landing_path, _readings("COMP-0001", 1, freeze=True) +
                  _readings("COMP-0002", 2, freeze=False), arrive, org="acme")
    run_pipeline(settings, db_url, run_id="stuck", as_of=arrive)

    # the frozen pressure is in the aggregates the rules read: flat over 4 hours
    freeze_hour = T0 + timedelta(minutes=10 * FREEZE)
    with conn.transaction():
        flat = conn.execute(
            "SELECT compressor_id, count(*) FILTER (WHERE stddev_4h = 0) FROM sensor_readings_agg"
            " WHERE metric = 'stage2_suction_psig' AND hour >= %s AND hour < %s"
            " GROUP BY 1 ORDER BY 1",
            (freeze_hour, freeze_hour + timedelta(hours=8))).fetchall()
    assert flat == [("COMP-0001", 5), ("COMP-0002", 0)]

    rule_set = load_rule_set(DEFAULT_RULES)
    day = T0 + timedelta(days=DAYS - 1)
    result = evaluate(conn, rule_set, "acme", (day, day + timedelta(hours=23)))
    fired = {(b.compressor_id, b.rule_id) for b in result.breaches}
    notices = set(notice_rule_ids(rule_set))

    # the technician's notice: the frozen channel, its frozen reading, from 6 hours unchanged
    stuck = [b for b in result.breaches if b.rule_id == "stage2_suction_pressure_stuck"]
    assert {b.compressor_id for b in stuck} == {"COMP-0001"}
    assert min(b.hour for b in stuck) == freeze_hour + timedelta(hours=5)
    assert {b.value for b in stuck} == {_readings("COMP-0001", 1, True)[FREEZE][
        "stage2_suction_psig"]}
    assert "stage2_suction_pressure_stuck" in notices
    # no machine alert on either unit: the ratio from the frozen pressure has no expectation
    assert {f for f in fired if f[1] not in notices} == set()
    assert not {f for f in fired if f[0] == "COMP-0002"}

    # the hourly run's single-hour evaluation raises the same notices hour by hour
    for i in range(3, 10):
        at = freeze_hour + timedelta(hours=i)
        one = evaluate(conn, rule_set, "acme", (at, at))
        assert {(b.compressor_id, b.rule_id) for b in one.breaches if b.rule_id in notices} \
            == {(b.compressor_id, b.rule_id) for b in result.breaches
                if b.rule_id in notices and b.hour == at}
