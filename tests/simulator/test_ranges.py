"""Healthy running units stay inside each model's documented normal ranges and below every
DOMAIN.md warning setpoint, hot spells and pressure swings included, so an absolute setpoint
raises no false alert on them. A stuck transmitter can freeze at any value (zero oil pressure
taken while stopped, say): units with one are left out, as faulty units are."""

from __future__ import annotations

import duckdb
import pytest

from altaviz.core.telemetry import CHANNELS, MAX_STAGES
from tests.simulator.conftest import excused, field_nulls

# model -> channel -> (low, high) for healthy units while running and warmed up.
RANGES = {
    "Ariel JGK/4": {"speed_rpm": (1150, 1420), "flow_mmscfd": (1.0, 20.0),
                    "jacket_water_temp_f": (175, 205)},
    "Ariel JGE/4": {"speed_rpm": (950, 1220), "flow_mmscfd": (1.0, 25.0),
                    "jacket_water_temp_f": (160, 200)},
    "Ajax DPC-360": {"speed_rpm": (360, 440), "flow_mmscfd": (0.3, 5.0)},
}
COMMON = {
    "vibration_frame_mm_s": (0.8, 7.5),      # warning 8.0
    "vibration_cylinder_mm_s": (1.0, 12.0),  # warning 13.0
    "vibration_skid_mm_s": (0.2, 2.8),       # warning 3.0
    "oil_pressure_psig": (51, 80),           # warning below 50
    "oil_temp_f": (120, 178),                # warning 180
    "oil_filter_dp_psid": (0.5, 9.5),        # warning 10
    "bearing_temp_max_f": (120, 210),        # max 220
    "spread": (0, 18),                       # warning 20
    "discharge_max": (120, 290),             # warning 300
    "ambient_temp_f": (-20, 125),
    "stage1_suction_psig": (5, 160),         # gathering suction 10-150 psig
    "final_discharge": (140, 1260),          # discharge 150-1,200 psig
}


def _healthy(run):
    con = duckdb.connect()
    con.register("t", run.table)
    con.execute("create table f as select * from (values " + ",".join(
        f"('{c['compressor_id']}', '{c['model']}', {c['stages']})"
        for c in run.fleet["compressors"]) + ") f(compressor_id, model, stages)")
    faulty = {f.compressor_id for f in run.truth.faults} | {
        e.compressor_id for e in run.truth.nuisance_events if e.kind == "stuck_sensor"}
    con.execute("create table faulty(compressor_id varchar)")
    con.executemany("insert into faulty values (?)", [[c] for c in faulty])
    # running and at least 3 hours after any start (warm): the lagged speed must be > 0
    con.execute("""
        create view h as
        select t.*, f.model, f.stages,
               bearing_temp_max_f - bearing_temp_min_f as spread,
               greatest(stage1_discharge_temp_f, stage2_discharge_temp_f,
                        stage3_discharge_temp_f, stage4_discharge_temp_f) as discharge_max,
               coalesce(stage4_discharge_psig, stage3_discharge_psig,
                        stage2_discharge_psig) as final_discharge
        from (select *, min(speed_rpm) over (partition by compressor_id order by ts
                        rows between 18 preceding and current row) as warm
              from t) t join f using (compressor_id)
        where compressor_id not in (select compressor_id from faulty) and warm > 0
    """)
    return con


@pytest.fixture(scope="module")
def healthy(clean_run):
    return _healthy(clean_run)


@pytest.fixture(scope="module")
def healthy_calm(calm_run):
    return _healthy(calm_run)


def test_healthy_rows_exist_for_every_model(healthy):
    counts = dict(healthy.sql("select model, count(*) from h group by model").fetchall())
    assert set(counts) == set(RANGES)
    assert min(counts.values()) > 10_000


@pytest.mark.parametrize("model", sorted(RANGES))
def test_model_ranges(healthy, model):
    for channel, (lo, hi) in {**COMMON, **RANGES[model]}.items():
        mn, mx = healthy.execute(f"select min({channel}), max({channel}) from h where model = ?",
                                 [model]).fetchone()
        assert lo <= mn and mx <= hi, f"{model} {channel}: [{mn}, {mx}] not in [{lo}, {hi}]"


def test_relative_baselines_hold_when_calm(healthy_calm):
    """Calm (no field behaviour), hourly means stay within the relative warning bands of
    DOMAIN.md around each unit's median: discharge temperature +12 F, bearing +20 F, flow
    deficit 5%. With field behaviour they need not: see test_field.py."""
    worst = healthy_calm.sql("""
        with hourly as (
            select compressor_id, date_trunc('hour', ts) as hr,
                   avg(discharge_max) as td, avg(bearing_temp_max_f) as tb,
                   avg(flow_mmscfd) as q
            from h group by all)
        select max(td - med_td), max(tb - med_tb), min(q / med_q) from hourly join (
            select compressor_id, median(td) as med_td, median(tb) as med_tb, median(q) as med_q
            from hourly group by compressor_id) using (compressor_id)
    """).fetchone()
    assert worst[0] < 12 and worst[1] < 20 and worst[2] > 0.95, worst


def test_absent_channels_are_null(clean_run):
    """Stage channels beyond the unit's stages and jacket water without a driver are null;
    every other required channel is reported unless the field left it null (dropout, missing
    instrument)."""
    nulls = field_nulls(clean_run.truth)
    t = clean_run.table.to_pydict()
    by_id = {c["compressor_id"]: c for c in clean_run.fleet["compressors"]}
    for i in range(0, len(t["compressor_id"]), 97):
        unit = by_id[t["compressor_id"][i]]
        cid, ts = t["compressor_id"][i], t["ts"][i]
        for s in range(1, MAX_STAGES + 1):
            for name in (f"stage{s}_discharge_temp_f", f"stage{s}_suction_psig"):
                present = t[name][i] is not None
                assert present == (s <= unit["stages"] and not excused(nulls, cid, name, ts))
        assert (t["jacket_water_temp_f"][i] is None) == (
            unit["driver"] is None or excused(nulls, cid, "jacket_water_temp_f", ts))
        for c in CHANNELS:
            if c.group == "frame":
                assert (t[c.name][i] is None) == excused(nulls, cid, c.name, ts), c.name


def test_fleet_models_and_ratings(clean_run):
    fleet = clean_run.fleet
    ids = [c["compressor_id"] for c in fleet["compressors"]]
    assert ids == [f"COMP-{i:04d}" for i in range(1, len(ids) + 1)]
    models = {(c["model"], c["driver"], c["rated_hp"], c["rated_rpm"])
              for c in fleet["compressors"]}
    assert models == {("Ariel JGK/4", "Caterpillar G3516B", 1380, 1400),
                      ("Ariel JGE/4", "Waukesha L7044GSI VHP", 1680, 1200),
                      ("Ajax DPC-360", None, 360, 420)}
    assert {c["stages"] for c in fleet["compressors"]} == {2, 3, 4}
    assert {s["basin"] for s in fleet["sites"]} <= {"Permian", "Eagle Ford", "Haynesville"}
    assert len(fleet["organizations"]) == 3
