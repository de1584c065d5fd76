"""A transmitter that goes silent or freezes, from readings through the ETL to the default
rules: the technician gets a data-quality notice ("sensor offline" or "stuck"), and no machine
alert comes from the bad channel; a real drop in oil pressure still alerts.

Both units of ``acme`` run at a constant speed with live (noisy, 0.1 resolution) channels for
two days; the second day is evaluated hour by hour as the hourly run does, and as one range.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from altaviz.core import db
from altaviz.core.fleet import Fleet
from altaviz.core.messages import load_context, title_for
from altaviz.core.payloads import AlertState, Breach
from altaviz.core.settings import Settings
from etl.pipeline import run_pipeline
from rules.evaluate import evaluate
from rules.loader import DEFAULT_RULES, load_rule_set
from rules.schema import notice_rule_ids
from rules.store import save_rule_set
from tests.etl.landing import BASE, T0, reading, write_landing

DAYS = 2
DAY2 = 24 * 6                     # reading index of the evaluated day's first reading
EVENT = DAY2 + 8 * 6              # the event starts on day 2 at 08:00


def _readings(compressor_id: str, seed: int, oil: np.ndarray | None = None,
              stopped: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Ten-minute readings; ``oil``: the oil pressure per reading (NaN: no value sent);
    ``stopped``: readings [a, b) with the unit at rest."""
    rng = np.random.default_rng(seed)
    n = DAYS * 24 * 6
    out = []
    for i in range(n):
        values: dict[str, Any] = {k: round(float(v) + rng.normal(0.0, 0.3), 1)
                                  for k, v in BASE.items() if k != "speed_rpm"}
        values["speed_rpm"] = round(1200.0 + rng.normal(0.0, 2.0))
        if oil is not None:
            values["oil_pressure_psig"] = None if np.isnan(oil[i]) else float(oil[i])
        if stopped is not None and stopped[0] <= i < stopped[1]:
            values["speed_rpm"] = 0.0
        out.append(reading(compressor_id, T0 + timedelta(minutes=10 * i), **values))
    return out


def _live_oil(seed: int) -> np.ndarray:
    """A healthy oil pressure: 60 psig with the noise of a live transmitter."""
    rng = np.random.default_rng(seed + 100)
    return np.round(60.0 + rng.normal(0.0, 0.3, DAYS * 24 * 6), 1)


def _run(settings: Settings, db_url: str, rows: list[dict[str, Any]]) -> None:
    arrive = T0 + timedelta(days=DAYS, minutes=5)
    write_landing(settings.landing_path, rows, arrive, org="acme")
    run_pipeline(settings, db_url, run_id="offline", as_of=arrive)


def _hour(index: int) -> datetime:
    return T0 + timedelta(minutes=10 * index)


def _evaluate(conn: psycopg.Connection[Any]) -> tuple[list[Breach], set[str]]:
    """The evaluated day's breaches (one range), checked against the hourly run's single-hour
    evaluations of the event's hours; and the ids of the notice rules."""
    rule_set = load_rule_set(DEFAULT_RULES)
    day = _hour(DAY2)
    result = evaluate(conn, rule_set, "acme", (day, day + timedelta(hours=23)))
    notices = set(notice_rule_ids(rule_set))
    for i in range(0, 12):
        at = _hour(EVENT) + timedelta(hours=i)
        one = evaluate(conn, rule_set, "acme", (at, at))
        assert {(b.compressor_id, b.rule_id, b.value) for b in one.breaches} == \
            {(b.compressor_id, b.rule_id, b.value) for b in result.breaches if b.hour == at}
    return list(result.breaches), notices


def test_a_silent_oil_transmitter_raises_an_offline_notice_only_where_the_unit_carries_it(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    # COMP-0001's oil pressure sends nothing for 4 running hours, then (from 16:00) nothing
    # for 6 hours while the unit is stopped; COMP-0002 carries no oil pressure transmitter.
    oil = _live_oil(1)
    oil[EVENT:EVENT + 4 * 6] = np.nan
    stop = (DAY2 + 16 * 6, DAY2 + 22 * 6)
    oil[stop[0]:stop[1]] = np.nan
    with conn.transaction():
        conn.execute("UPDATE compressors SET channels = array_remove(channels, "
                     "'oil_pressure_psig') WHERE compressor_id = 'COMP-0002'")
    _run(settings, db_url, _readings("COMP-0001", 1, oil, stopped=stop)
         + _readings("COMP-0002", 2, np.full(DAYS * 24 * 6, np.nan)))

    breaches, notices = _evaluate(conn)
    offline = [b for b in breaches if b.rule_id == "oil_pressure_offline"]
    # the notice from the third silent running hour, with the hours silent, on COMP-0001 only
    assert [(b.compressor_id, b.hour, b.value) for b in offline] == [
        ("COMP-0001", _hour(EVENT) + timedelta(hours=2), 3.0),
        ("COMP-0001", _hour(EVENT) + timedelta(hours=3), 4.0)]
    assert "oil_pressure_offline" in notices
    # no machine alert from either unit's missing oil pressure
    assert not [b for b in breaches if b.metric == "oil_pressure_psig"
                and b.rule_id not in notices]
    # the stopped unit's silent channel raises nothing: only the stop notice speaks
    assert not [b for b in breaches if b.rule_id.endswith("_offline")
                and b.hour >= _hour(stop[0])]
    assert {b.rule_id for b in breaches if b.hour >= _hour(stop[0])} <= {"unit_stopped"}


def test_a_frozen_oil_transmitter_under_the_setpoint_is_a_stuck_notice_not_an_alarm(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    # COMP-0001's oil transmitter freezes at 41 psig (under the 50 psig alarm) while the unit
    # is stopped (02:00-08:00) and stays frozen after it starts again; COMP-0002's oil
    # pressure really falls, noisily, from 60 to 40 psig from 08:00 over 8 hours.
    frozen = _live_oil(1)
    frozen[DAY2 + 4 * 6:] = 41.0
    stop = (DAY2 + 2 * 6, EVENT)
    falling = _live_oil(2)
    steps = np.arange(8 * 6)
    falling[EVENT:EVENT + 8 * 6] = np.round(60.0 - 20.0 * steps / steps[-1]
                                            + np.random.default_rng(3).normal(0.0, 0.3,
                                                                              steps.size), 1)
    falling[EVENT + 8 * 6:] = np.round(40.0 + np.random.default_rng(4).normal(
        0.0, 0.3, falling.size - EVENT - 8 * 6), 1)
    _run(settings, db_url, _readings("COMP-0001", 1, frozen, stopped=stop)
         + _readings("COMP-0002", 2, falling))

    breaches, notices = _evaluate(conn)
    fired = {(b.compressor_id, b.rule_id) for b in breaches}
    # the frozen transmitter: the stuck notice, from the third running hour of a flat 4-hour
    # window (the running gate opens at 11:00), and no alarm
    stuck = [b for b in breaches if b.rule_id == "oil_pressure_stuck"]
    assert {b.compressor_id for b in stuck} == {"COMP-0001"}
    assert min(b.hour for b in stuck) == _hour(EVENT) + timedelta(hours=5)
    assert {b.value for b in stuck} == {41.0}
    assert not {f for f in fired if f[0] == "COMP-0001" and f[1] not in notices}
    # its message says where the frozen reading sits against the machine rule's alarm level
    save_rule_set(conn, load_rule_set(DEFAULT_RULES))
    first = min(stuck, key=lambda b: b.hour)
    alert = AlertState(
        alert_id="a1", workflow_id="w", org_id="acme", compressor_id="COMP-0001",
        site_id=first.site_id, rule_id=first.rule_id, metric=first.metric, value=first.value,
        threshold=None, severity="warning", breach_hour=first.hour, opened_at=first.hour)
    with db.tenant(conn, "acme"):
        ctx = load_context(conn, alert)
    assert ctx.alarm == ("below", 50.0)
    assert title_for(alert, "opened", ctx) == (
        "COMP-0001 oil pressure reads 41 psig, under the 50 psig alarm, unchanged for 6 hours:"
        " check the transmitter")
    # the real drop: oil_pressure_low fires on COMP-0002, and no stuck notice there
    low = [b for b in breaches if b.compressor_id == "COMP-0002"
           and b.rule_id == "oil_pressure_low"]
    assert low and min(b.hour for b in low) <= _hour(EVENT) + timedelta(hours=8)
    assert not {f for f in fired if f[0] == "COMP-0002" and f[1] in notices}
