"""Field behaviour: every nuisance kind shows in the landing files as the ground truth says, the
physics stays consistent (flow swings with suction pressure at constant speed, a hot spell
warms discharge gas), fault shapes and durations vary, and the ground truth stays readable by
a reader that only knows faults."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import get_args

import duckdb
import numpy as np
import pytest

from altaviz.simulator import DirtyConfig, FieldConfig, GroundTruth, SimulationConfig
from altaviz.simulator.faults import SHAPES, _shaped, plan_faults
from altaviz.simulator.field import plan_field
from altaviz.simulator.fleet_gen import generate_fleet
from altaviz.simulator.ground_truth import NuisanceKind
from rules.backtest import read_ground_truth
from tests.simulator.conftest import Run, _run, sensor_trouble

SENSOR = ("stuck_sensor", "sensor_dropout", "missing_channel")
#: Raised rates, so a small fleet shows every kind several times.
BUSY = FieldConfig(hot_spells_per_basin_day=0.15, stuck_sensors_per_unit_day=0.05,
                   dropouts_per_unit_day=0.08, shut_ins_per_unit_day=0.02,
                   missing_channel_unit_share=0.3)
GAPS_ONLY = DirtyConfig.none().model_copy(update={"comm_gaps_per_unit_day": 0.05})


def _busy(tmp, **changes) -> Run:
    return _run(tmp, compressors=40, days=10, seed=5, fault_share=0.2, organizations=2,
                dirty=GAPS_ONLY, field=BUSY.model_copy(update=changes))


@pytest.fixture(scope="module")
def busy(tmp_path_factory) -> Run:
    return _busy(tmp_path_factory.mktemp("busy"))


@pytest.fixture(scope="module")
def con(busy):
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    c.register("raw", busy.table)
    c.execute("create table t as select * from raw order by compressor_id, ts")
    return c


def _events(run: Run, kind: str):
    events = [e for e in run.truth.nuisance_events if e.kind == kind]
    assert events, kind
    return events


def _window(con, e, channels: str):
    return con.execute(f"select {channels} from t where compressor_id = ? and ts >= ? "
                       "and ts < ? order by ts", [e.compressor_id, e.start, e.end]).fetchall()


def test_every_kind_is_recorded_with_its_window(busy):
    truth = busy.truth
    kinds = Counter(e.kind for e in truth.nuisance_events)
    assert set(kinds) == set(get_args(NuisanceKind)), kinds
    ids = {c["compressor_id"]: c["org_id"] for c in busy.fleet["compressors"]}
    for e in truth.nuisance_events:
        assert ids[e.compressor_id] == e.org_id
        assert e.start < e.end and truth.window_start <= e.start < truth.window_end
        assert (e.channel is not None) == (e.kind in SENSOR), e
    raw = json.loads(busy.result.ground_truth_path.read_text())
    for e in raw["nuisance_events"]:
        assert e["start"].endswith("Z") and e["end"].endswith("Z"), e
    assert truth.operations.shut_ins == kinds["shut_in"]


def test_stuck_sensor_repeats_one_value(busy, con):
    checked = 0
    for e in _events(busy, "stuck_sensor"):
        if sensor_trouble(busy.truth, e.compressor_id, e.channel, e.start, e.end,
                          kinds=("sensor_dropout",)):
            continue
        values = [r[0] for r in _window(con, e, e.channel)]
        assert set(values) == {e.magnitude}, (e, values[:5])
        checked += len(values) >= 6
        outside = con.execute(
            f"select count(distinct {e.channel}) from t where compressor_id = ? "
            "and (ts < ? or ts >= ?)", [e.compressor_id, e.start, e.end]).fetchone()[0]
        assert outside > 1 or e.end - e.start > timedelta(days=8), e
    assert checked >= 5


def test_dropout_nulls_its_channel_only(busy, con):
    for e in _events(busy, "sensor_dropout"):
        rows = _window(con, e, f"{e.channel}, speed_rpm")
        assert all(r[0] is None and r[1] is not None for r in rows), e


def test_missing_channel_is_null_all_window(busy, con):
    for e in _events(busy, "missing_channel"):
        assert (e.start, e.end) == (busy.truth.window_start, busy.truth.window_end)
        n, reported = con.execute(
            f"select count(*), count({e.channel}) from t where compressor_id = ?",
            [e.compressor_id]).fetchone()
        assert n > 1000 and reported == 0, e


def test_shut_in_unit_is_down_for_days(busy, con):
    for e in _events(busy, "shut_in"):
        assert e.end - e.start >= timedelta(days=2)
        rows = _window(con, e, "speed_rpm, flow_mmscfd")
        assert rows and {r[0] for r in rows} == {0.0}, e
        assert {r[1] for r in rows} <= {0.0, None}, e
        assert any(s.kind == "shut_in" and (s.start, s.end) == (e.start, e.end)
                   for s in busy.truth.shutdowns if s.compressor_id == e.compressor_id)


@pytest.mark.parametrize("kind", ["planned_stop", "cycling_stop"])
def test_stops_show_zero_speed(busy, con, kind):
    for e in _events(busy, kind):
        assert {r[0] for r in _window(con, e, "speed_rpm")} <= {0.0}, e


def test_comm_gap_sends_no_readings(busy, con):
    for e in _events(busy, "comm_gap"):
        assert _window(con, e, "ts") == [], e


def test_startup_after_a_shut_in_warms_up(busy, con):
    warmed = 0
    shut_ends = {(e.compressor_id, e.end) for e in _events(busy, "shut_in")}
    for e in _events(busy, "startup"):
        assert e.end - e.start <= timedelta(hours=4)     # until the next stop, if sooner
        rows = _window(con, e, "speed_rpm, oil_temp_f")
        assert all(r[0] > 0 for r in rows), e
        if (e.compressor_id, e.start) in shut_ends and len(rows) == 24 and not sensor_trouble(
                busy.truth, e.compressor_id, "oil_temp_f", e.start, e.end):
            assert e.magnitude is not None and e.magnitude >= 48
            assert rows[-1][1] - rows[0][1] > 20, (e, rows[0], rows[-1])   # cold oil warms
            warmed += 1
    assert warmed >= 1


def test_hot_spell_raises_ambient_and_discharge_temperatures(busy, tmp_path):
    calm_weather = _busy(tmp_path / "no-spells", hot_spells_per_basin_day=0.0)
    spells = _events(busy, "hot_spell")
    assert not [e for e in calm_weather.truth.nuisance_events if e.kind == "hot_spell"]
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    c.register("hot", busy.table)
    c.register("cool", calm_weather.table)
    c.execute("""create table d as select h.compressor_id, h.ts,
            h.ambient_temp_f - c.ambient_temp_f as d_amb,
            h.stage1_discharge_temp_f - c.stage1_discharge_temp_f as d_td1,
            h.stage2_discharge_temp_f - c.stage2_discharge_temp_f as d_td2,
            h.speed_rpm as speed
        from hot h join cool c using (compressor_id, ts)""")
    spelled = 0
    for e in spells:
        core = (e.start + timedelta(hours=12), e.end - timedelta(hours=12))
        amb, td1, td2 = c.execute(
            "select median(d_amb), median(d_td1), median(d_td2) from d where compressor_id = ? "
            "and ts >= ? and ts < ? and speed > 0", [e.compressor_id, *core]).fetchone()
        if amb is None:
            continue        # stopped all spell long
        assert e.magnitude is not None and abs(amb - e.magnitude) < 1.0, (e, amb)
        assert td1 > 3.0 and td2 > 3.0, (e, td1, td2)
        spelled += 1
    assert spelled >= 5
    in_spell = " or ".join(
        f"(compressor_id = '{e.compressor_id}' and ts >= '{e.start.isoformat()}' "
        f"and ts < '{e.end.isoformat()}')" for e in spells)
    outside = c.execute(f"select max(abs(d_amb)), max(abs(d_td2)) from d where not ({in_spell})"
                        ).fetchone()
    assert outside == (0.0, 0.0)


def test_flow_swings_with_suction_pressure_at_constant_speed(clean_run):
    """Healthy units holding one speed setpoint, without nuisance events: daily flow moves by
    several percent, and with suction pressure (gas density), as a recip's does."""
    truth = clean_run.truth
    busy_units = {f.compressor_id for f in truth.faults} | {
        e.compressor_id for e in truth.nuisance_events if e.kind != "startup"}
    c = duckdb.connect()
    c.register("t", clean_run.table)
    rows = c.execute("""
        with d as (
            select compressor_id, date_trunc('day', ts) as day, avg(speed_rpm) as speed,
                   avg(flow_mmscfd) as flow, avg(stage1_suction_psig + 14.7) as suction
            from t group by all having min(speed_rpm) > 0)
        select compressor_id, (max(speed) - min(speed)) / median(speed),
               (max(flow) - min(flow)) / median(flow), corr(flow, suction), count(*)
        from d group by 1""").fetchall()
    steady = [r for r in rows if r[0] not in busy_units and r[1] < 0.002 and r[4] >= 8]
    assert len(steady) >= 5, rows
    spans = sorted(r[2] for r in steady)
    assert spans[0] > 0.02 and spans[len(spans) // 2] > 0.05, spans
    assert min(r[3] for r in steady) > 0.8, steady


def test_suction_drift_is_planned_within_bounds(tmp_path):
    config = SimulationConfig(compressors=200, days=30, seed=2, out=tmp_path)
    _, units = generate_fleet(config)
    plan = plan_field(config, units)
    assert plan is not None
    per_day = plan.drift_per_step * 144
    assert np.abs(per_day).max() <= FieldConfig().suction_drift_per_day
    assert (per_day > 0.001).any() and (per_day < -0.001).any()
    assert plan.fixed_speed.mean() == pytest.approx(0.5, abs=0.1)
    assert plan_field(config.model_copy(update={"field": None}), units) is None


def test_fault_shapes_and_durations(tmp_path):
    config = SimulationConfig(compressors=400, days=40, seed=9, out=tmp_path, fault_share=0.2)
    _, units = generate_fleet(config)
    faults = plan_faults(config, units)
    assert {f.shape for f in faults} == set(SHAPES)
    window = 40 * 144
    finished = [f for f in faults if f.failure_step < window]
    days = [(f.failure_step - f.onset_step) / 144 for f in finished]
    assert 4.0 <= min(days) and max(days) <= 12.0
    calm = plan_faults(config.model_copy(update={"field": None}), units)
    assert {f.shape for f in calm} == {"gradual"}
    p = np.array([0.0, 0.5, 1.0])
    started = np.array([True, True, True])
    assert _shaped(p, started, "step")[0] == pytest.approx(0.4)
    assert _shaped(p, started, "accelerating")[1] < 0.5 < _shaped(p, started, "step")[1]
    assert list(_shaped(p, started, "gradual")) == list(p)


def test_step_faults_jump_at_onset(clean_run):
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    c.register("raw", clean_run.table)
    c.execute("create table t as select * from raw order by compressor_id, ts")
    jumps: dict[str, list[float]] = {"step": [], "gradual": []}
    for f in clean_run.truth.faults:
        channel = f.channels[0]
        if f.shape not in jumps or sensor_trouble(
                clean_run.truth, f.compressor_id, channel, f.onset - timedelta(hours=1),
                f.onset + timedelta(hours=1)):
            continue
        before, after, slowest = c.execute(
            f"select avg({channel}) filter (where ts < ?), avg({channel}) filter (where ts >= ?),"
            " min(speed_rpm) from t where compressor_id = ? and ts >= ? and ts < ?",
            [f.onset, f.onset, f.compressor_id, f.onset - timedelta(hours=1),
             f.onset + timedelta(hours=1)]).fetchone()
        if slowest and before is not None and after is not None:
            jumps[f.shape].append(after - before)
    assert jumps["step"] and min(jumps["step"]) > 5.0, jumps
    assert jumps["gradual"] and max(jumps["gradual"]) < 3.0, jumps


def test_calm_profile_has_no_field_events(calm_run):
    kinds = {e.kind for e in calm_run.truth.nuisance_events}
    assert kinds <= {"planned_stop", "cycling_stop", "startup", "comm_gap"}
    assert {"planned_stop", "startup"} <= kinds
    assert {f.shape for f in calm_run.truth.faults} == {"gradual"}
    assert calm_run.truth.config["field"] is None


def test_faults_only_readers_still_read_the_file(busy):
    path = busy.result.ground_truth_path
    faults = read_ground_truth(path)
    assert [(f.compressor_id, f.mode) for f in faults] == [
        (f.compressor_id, f.mode) for f in busy.truth.faults]
    raw = json.loads(path.read_text())
    raw.pop("nuisance_events")
    raw["operations"].pop("shut_ins")
    raw["shutdowns"] = [s for s in raw["shutdowns"] if s["kind"] != "shut_in"]
    for f in raw["faults"]:
        f.pop("shape")
    older = GroundTruth.model_validate(raw)      # a file written before these fields existed
    assert older.nuisance_events == () and {f.shape for f in older.faults} == {"gradual"}
