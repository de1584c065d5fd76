"""The simulator's planned stop through the real ETL, the default rules and the pipeline's
hold-back step: inside a maintenance window it opens no alert; without one it opens exactly one
``unit_stopped`` alert and no sensor alert, and the breaches held back are recorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from activities.holds import apply_windows
from altaviz.app.holds import add_silence, add_window, held_counts
from altaviz.core import db
from altaviz.core.fleet_store import load_fleet
from altaviz.core.messages import title_for
from altaviz.core.payloads import Breach, Evaluation, UnitStop
from altaviz.core.settings import Settings
from altaviz.core.silences import MaintenanceWindow, parse_matchers
from altaviz.simulator import SimulationConfig, simulate
from altaviz.simulator.config import DirtyConfig, FieldConfig
from etl.lake import Lake
from etl.pipeline import run_pipeline
from rules.backtest import backtest
from rules.evaluate import evaluate
from rules.loader import DEFAULT_RULES, load_rule_set
from rules.stops import SilverStops, find_stop, with_stops
from tests.rules.helpers import h, put
from worker import rules_evaluator
from workflows.alert import initial_state


@pytest.fixture
def stopped_fleet(tmp_path: Path, db_url: str, conn: psycopg.Connection[Any]) -> Any:
    """Three units over ten days whose only field events are planned stops (clean data)."""
    result = simulate(SimulationConfig(
        compressors=3, days=10, seed=7, out=tmp_path / "sim", fault_share=0, organizations=1,
        dirty=DirtyConfig.none(), cycling_unit_share=0, planned_shutdowns_per_unit_day=0.3,
        field=FieldConfig(hot_spells_per_basin_day=0, stuck_sensors_per_unit_day=0,
                          dropouts_per_unit_day=0, shut_ins_per_unit_day=0,
                          missing_channel_unit_share=0)))
    load_fleet(conn, result.fleet)
    run_pipeline(Settings(data_dir=tmp_path, landing_dir=result.landing_dir,
                          lake_dir=tmp_path / "lake"), db_url)
    return result


def _evaluate(conn: psycopg.Connection[Any], org: str, start: datetime,
              end: datetime) -> Evaluation:
    """What the pipeline's evaluate_rules activity does: rules (inhibition included), then
    the maintenance windows."""
    rules = load_rule_set(DEFAULT_RULES)
    result = evaluate(conn, rules, org, (start, end))
    return apply_windows(conn, Evaluation(org_id=org, breaches=result.breaches,
                                          clears=result.clears, held=result.held))


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def test_planned_stop_with_and_without_a_window(stopped_fleet: Any,
                                                conn: psycopg.Connection[Any]) -> None:
    stops = [n for n in stopped_fleet.ground_truth.nuisance_events
             if n.kind == "planned_stop" and n.end - n.start >= timedelta(hours=3)]
    stop = stops[-1]  # late in the window: the units' baselines exist by then
    org, unit = stop.org_id, stop.compressor_id
    start, end = _hour(stop.start) - timedelta(hours=2), _hour(stop.end) + timedelta(hours=6)

    # Without a window: exactly one alert (one rule on the unit), the stop's own.
    bare = _evaluate(conn, org, start, end)
    mine = {b.rule_id for b in bare.breaches if b.compressor_id == unit}
    assert mine == {"unit_stopped"}, mine
    stopped_hours = [b.hour for b in bare.breaches
                     if b.compressor_id == unit and b.rule_id == "unit_stopped"]
    assert stop.start - timedelta(hours=1) <= min(stopped_hours) <= stop.end

    # With the planned window: nothing opens for the unit, and what was held is recorded.
    add_window(conn, MaintenanceWindow(org_id=org, compressor_id=unit, starts_at=stop.start,
                                       ends_at=stop.end, reason="planned overhaul",
                                       created_by="sup.amy"))
    planned = _evaluate(conn, org, start, end)
    assert [b for b in planned.breaches if b.compressor_id == unit] == []
    assert {h.breach.rule_id for h in planned.held if h.held_by == "maintenance"} == {
        "unit_stopped"}
    assert held_counts(conn, org).get("maintenance") == len(stopped_hours)
    # the backtest counts the same stop as one alert held back by the window
    report = backtest(conn, load_rule_set(DEFAULT_RULES), [org], start, end)
    assert report.held_back == {"maintenance": 1, "inhibited": 0, "silence": 0}
    assert not [e for e in report.episodes if e.compressor_id == unit]
    # other units are untouched by the window
    assert ({(b.compressor_id, b.rule_id) for b in planned.breaches}
            == {(b.compressor_id, b.rule_id) for b in bare.breaches if b.compressor_id != unit})


def test_a_stopped_unit_inhibits_its_flow_alerts(conn: psycopg.Connection[Any],
                                                 fleet: Any) -> None:
    """A sensor rule that fires on a stopped unit (it does not wait for the running gate) is
    held back as inhibited while unit_stopped fires at the same hour."""
    # The default flow rule judges flow against what the unit should move at its speed, so it
    # has no expectation once the unit stops; an absolute low-flow rule without the running
    # gate, listed in unit_stopped's `inhibits`, stands for any consequence of a stop.
    text = DEFAULT_RULES.read_text().replace(
        "inhibits: [flow_deficit,", "inhibits: [flow_low, flow_deficit,") + """
  - id: flow_low
    kind: threshold
    metric: flow_mmscfd
    aggregate: mean
    window: 1h
    comparison: below
    warning: 1
    persistence: {hours: 1, of: 1}
    running_only: false
    diagnosis: Flow lost.
    checks: [Check the unit.]
    basis: (test) flow under 1 MMSCFD
"""
    rules = load_rule_set("rules.yaml", text=text)
    # COMP-0001 runs 10 days at 6 MMSCFD, then stops at hour 240: speed and flow drop to 0
    speed: list[float | None] = [*([1200.0] * 240), *([0.0] * 6)]
    flow: list[float | None] = [*([6.0] * 240), *([0.0] * 6)]
    put(conn, "acme", "COMP-0001", "speed_rpm", 0, speed, running=False)
    put(conn, "acme", "COMP-0001", "speed_rpm", 0, speed, "min_4h",
        running=False)
    put(conn, "acme", "COMP-0001", "flow_mmscfd", 0, flow, running=False)
    put(conn, "acme", "COMP-0001", "flow_mmscfd", 0, flow, "mean_4h",
        running=False)
    conn.commit()
    result = evaluate(conn, rules, "acme", (h(238), h(245)))
    # (the unit's other channels have no rows here: their sensor-offline notices are not
    # machine alerts, and not what this test is about)
    assert {b.rule_id for b in result.breaches if b.compressor_id == "COMP-0001"
            and not b.rule_id.endswith("_offline")} == {"unit_stopped"}
    held = {(x.breach.rule_id, x.held_by) for x in result.held}
    assert held == {("flow_low", "inhibited")}
    # the backtest: one flow alert inhibited; the stop's alert opened inside a silence
    add_silence(conn, "acme", parse_matchers(["compressor=COMP-0001", "rule=unit_stopped"]),
                starts_at=h(239), ends_at=h(250), created_by="sup.amy", comment="known")
    report = backtest(conn, rules, ["acme"], h(238), h(245))
    assert report.held_back == {"maintenance": 0, "inhibited": 1, "silence": 1}
    assert report.summary()["held_back"] == report.held_back


def test_a_unit_that_stopped_and_went_silent_raises_no_data_alert(
        conn: psycopg.Connection[Any], fleet: Any) -> None:
    """While the unit's unit_stopped alert is open and active, its data-missing breaches are
    inhibited (a stopped unit with its gateway off has no data to clear the stop); another
    unit's are not."""
    rules = load_rule_set(DEFAULT_RULES)
    running: list[float | None] = [1200.0] * 24
    for comp in ("COMP-0001", "COMP-0002"):
        put(conn, "acme", comp, "speed_rpm", 0, running, running=False)
        put(conn, "acme", comp, "speed_rpm", 0, running, "min_4h", running=False)
    with db.admin(conn):
        conn.execute(
            "INSERT INTO alert_history (alert_id, org_id, compressor_id, rule_id, metric,"
            " severity, condition_state, ack_state, state, breach_hour, opened_at, workflow_id)"
            " VALUES ('a1', 'acme', 'COMP-0001', 'unit_stopped', 'speed_rpm', 'warning',"
            " 'active', 'unacknowledged', 'open', %s, %s, 'w1')", (h(24), h(24)))
    conn.commit()
    result = evaluate(conn, rules, "acme", (h(30), h(30)))
    assert {(b.compressor_id, b.rule_id) for b in result.breaches} == {
        ("COMP-0002", "data_missing")}
    assert {(x.breach.compressor_id, x.breach.rule_id, x.held_by) for x in result.held} == {
        ("COMP-0001", "data_missing", "inhibited")}


def test_a_long_stop_inhibits_its_consequences_across_hours_live_and_in_the_backtest(
        conn: psycopg.Connection[Any], fleet: Any) -> None:
    """A unit stops for two hours, then its gateway goes quiet for eight: the data-missing
    breaches come hours after the stop's own alert opened, in hours unit_stopped has no row.
    The hourly pipeline holds them back while the stop's alert is open and active; the
    backtest replays the same and counts the same alerts (one stop, nothing else)."""
    rules = load_rule_set(DEFAULT_RULES)
    speed: list[float | None] = [*([1200.0] * 24), 0.0, 0.0, *([None] * 8)]
    for comp in ("COMP-0001", "COMP-0002"):
        put(conn, "acme", comp, "speed_rpm", 0, speed if comp == "COMP-0001" else
            [1200.0] * 24, running=False)
        put(conn, "acme", comp, "speed_rpm", 0, speed if comp == "COMP-0001" else
            [1200.0] * 24, "min_4h", running=False)
    conn.commit()
    # live: hour by hour, the stop's alert recorded as its workflow records it when it opens
    opened: set[tuple[str, str]] = set()
    held: set[tuple[str, str]] = set()
    for i in range(24, 34):
        result = evaluate(conn, rules, "acme", (h(i), h(i)))
        for b in result.breaches:
            if (b.compressor_id, b.rule_id) in opened:
                continue
            opened.add((b.compressor_id, b.rule_id))
            if b.rule_id == "unit_stopped":
                with db.admin(conn):
                    conn.execute(
                        "INSERT INTO alert_history (alert_id, org_id, compressor_id, rule_id,"
                        " metric, severity, condition_state, ack_state, state, breach_hour,"
                        " opened_at, workflow_id) VALUES (%s, 'acme', %s, 'unit_stopped',"
                        " 'speed_rpm', 'warning', 'active', 'unacknowledged', 'open', %s, %s,"
                        " %s)", (f"a-{b.compressor_id}", b.compressor_id, b.hour, b.hour,
                                 f"w-{b.compressor_id}"))
                conn.commit()
        held |= {(x.breach.compressor_id, x.breach.rule_id) for x in result.held}
    assert {o for o in opened if o[0] == "COMP-0001"} == {("COMP-0001", "unit_stopped")}
    assert ("COMP-0001", "data_missing") in held   # hours after the stop began
    # the backtest over the same hours agrees: one alert for the unit, data-missing inhibited
    report = backtest(conn, rules, ["acme"], h(24), h(33))
    assert {(e.compressor_id, e.rule_id) for e in report.episodes} == opened
    assert report.held_back["inhibited"] == 1


def test_the_stop_alert_says_when_the_unit_stopped_from_its_readings(
        stopped_fleet: Any, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """The stop rule's breach carries the stop as the 10-minute readings in the lake's silver
    table show it: the simulator's stop time, speed 0 and the discharge temperature just
    before; the message's headline says so."""
    stops = [n for n in stopped_fleet.ground_truth.nuisance_events
             if n.kind == "planned_stop" and n.end - n.start >= timedelta(hours=3)]
    stop = stops[-1]
    rules = load_rule_set(DEFAULT_RULES)
    start, end = _hour(stop.start), _hour(stop.start) + timedelta(hours=2)
    result = evaluate(conn, rules, stop.org_id, (start, end))
    first = min((b for b in result.breaches if b.compressor_id == stop.compressor_id
                 and b.rule_id == "unit_stopped"), key=lambda b: b.hour)
    assert first.stop is None  # the hourly aggregates cannot say when in the hour
    reader = SilverStops(Lake(tmp_path / "lake").uri("silver"))
    [described] = with_stops([first], rules, reader)
    assert described.stop is not None
    assert described.stop.stopped_at == stop.start
    assert described.stop.speed_rpm is not None and described.stop.speed_rpm < 50
    readings = reader.readings(stop.org_id, stop.compressor_id,
                               stop.start - timedelta(hours=1), stop.start)
    assert described.stop.discharge_temp_f == [r[2] for r in readings if r[2] is not None][-1]
    assert described.stop.discharge_temp_f > 150  # a running unit's, not a cooled one's
    alert = initial_state(described, "w", described.hour)
    assert title_for(alert, "opened").startswith(
        f"{stop.compressor_id} shut down at {stop.start:%H:%M} UTC: speed 0 rpm, last "
        "discharge temperature ")
    # a lake without the table leaves the breach as it was: the alert still goes out
    assert with_stops([first], rules, SilverStops(str(tmp_path / "nowhere"))) == [first]
    # the worker's evaluator (what the evaluate_rules activity runs) sets it the same way
    evaluator = rules_evaluator(Settings(data_dir=tmp_path, lake_dir=tmp_path / "lake"))
    ev = evaluator(conn, stop.org_id, [first.hour])
    [live] = [b for b in ev.breaches
              if b.compressor_id == stop.compressor_id and b.rule_id == "unit_stopped"]
    assert live.stop == described.stop


def test_find_stop() -> None:
    t = [h(0) + timedelta(minutes=10 * i) for i in range(6)]
    run: list[tuple[datetime, float | None, float | None]] = [
        (t[0], 1200.0, 340.0), (t[1], 1190.0, 348.0), (t[2], None, 349.0),
        (t[3], 0.0, 300.0), (t[4], 0.0, 280.0)]
    found = find_stop(run, 50.0)
    assert found is not None
    assert (found.stopped_at, found.speed_rpm, found.discharge_temp_f) == (t[3], 0.0, 348.0)
    assert find_stop([(t[0], 0.0, 90.0), (t[1], 0.0, 90.0)], 50.0) is None   # never ran
    assert find_stop(run[:2], 50.0) is None                                   # still running


def test_a_unit_whose_stop_alert_is_open_is_not_read_again() -> None:
    rules = load_rule_set(DEFAULT_RULES)
    breach = Breach(org_id="acme", compressor_id="COMP-0001", site_id="PB-01",
                    rule_id="unit_stopped", metric="speed_rpm", value=0.0, threshold=50.0,
                    severity="warning", hour=h(30))
    reads: list[str] = []

    def reader(b: Breach) -> UnitStop | None:
        reads.append(b.compressor_id)
        return UnitStop(stopped_at=h(29))

    assert with_stops([breach], rules, reader, open_stops={"COMP-0001"}) == [breach]
    assert reads == []
    [described] = with_stops([breach], rules, reader)
    assert reads == ["COMP-0001"] and described.stop == UnitStop(stopped_at=h(29))
    # a reading without speed (t[2]) is not known to have run: its temperature is not used
