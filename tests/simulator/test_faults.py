"""Each fault moves its channels in the documented direction; failed units shut down.

Flow is judged per unit of speed and suction pressure (``flow_norm``): in a field, flow swings
by several percent at constant speed with suction pressure, so only flow below what the unit
should move is a fault's signature. A channel with sensor trouble (stuck, dropped out or not
fitted) during the fault says nothing about the fault and is skipped.
"""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from altaviz.simulator.faults import MODES
from tests.simulator.conftest import sensor_trouble

# channel (by name or stage template) -> expected direction between onset and failure
DIRECTIONS = {
    "bearing_wear": {"bearing_temp_max_f": +1, "spread": +1, "oil_pressure_psig": -1,
                     "vibration_frame_mm_s": +1},
    "oil_degradation": {"oil_temp_f": +1, "oil_pressure_psig": -1, "oil_filter_dp_psid": +1},
    "cooler_fouling": {"stage{s}_discharge_temp_f": +1},
    "valve_degradation": {"stage{s}_discharge_temp_f": +1, "flow_norm": -1,
                          "ratio{s}": -1},
}
# derived columns -> the channels they are computed from
SOURCES = {"spread": ("bearing_temp_max_f", "bearing_temp_min_f"),
           "flow_norm": ("flow_mmscfd", "speed_rpm", "stage1_suction_psig"),
           **{f"ratio{s}": (f"stage{s}_discharge_psig", f"stage{s}_suction_psig")
              for s in range(1, 5)}}
# warning setpoints each mode must cross before failure (DOMAIN.md)
WARNINGS = {
    "bearing_wear": ("spread", ">", 20.0),
    "oil_degradation": ("oil_temp_f", ">", 180.0),
    # 300 F, or 25 F over the early median (over-baseline critical) on a cool unit
    "cooler_fouling": ("stage{s}_discharge_temp_f", ">", None),
    "valve_degradation": ("flow_norm", "<", None),   # 5% below the early median
}


@pytest.fixture(scope="module")
def con(clean_run):
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    c.register("raw", clean_run.table)
    c.execute("""create table t as select *, bearing_temp_max_f - bearing_temp_min_f as spread,
        flow_mmscfd / nullif(speed_rpm * (stage1_suction_psig + 14.7), 0) as flow_norm,
        (stage1_discharge_psig + 14.7) / (stage1_suction_psig + 14.7) as ratio1,
        (stage2_discharge_psig + 14.7) / (stage2_suction_psig + 14.7) as ratio2,
        (stage3_discharge_psig + 14.7) / (stage3_suction_psig + 14.7) as ratio3,
        (stage4_discharge_psig + 14.7) / (stage4_suction_psig + 14.7) as ratio4 from raw""")
    return c


def _troubled(truth, fault, channel, start, end) -> bool:
    return any(sensor_trouble(truth, fault.compressor_id, c, start, end)
               for c in SOURCES.get(channel, (channel,)))


def _stopped(truth, fault) -> bool:
    """The unit was stopped (shut in or in a planned stop) for part of its fault."""
    return any(s.compressor_id == fault.compressor_id and s.kind != "failure"
               and s.start < fault.failure and fault.onset < s.end for s in truth.shutdowns)


def _phase_medians(con, fault, channel):
    span = fault.failure - fault.onset
    return con.execute(
        f"""select median({channel}) filter (where ts < ?), median({channel}) filter (where ts >= ?)
            from t where compressor_id = ? and speed_rpm > 0 and ts >= ? and ts < ?""",
        [fault.onset + span * 0.15, fault.failure - span * 0.15, fault.compressor_id,
         fault.onset, fault.failure]).fetchone()


def test_every_mode_is_injected(clean_run):
    faults = clean_run.truth.faults
    assert len(faults) == round(0.3 * 150)
    assert {f.mode for f in faults} == set(MODES)
    failed = [f for f in faults if f.failure is not None]
    assert len(failed) >= 0.7 * len(faults)     # most failures fall inside a >= 7-day window
    for f in faults:
        assert (f.stage is not None) == (f.mode in ("cooler_fouling", "valve_degradation"))


def test_fault_channels_move_in_documented_direction(clean_run, con):
    checked = 0
    for f in clean_run.truth.faults:
        if f.failure is None or f.failure - f.onset < timedelta(hours=12):
            continue
        for template, sign in DIRECTIONS[f.mode].items():
            channel = template.format(s=f.stage)
            if _troubled(clean_run.truth, f, channel, f.onset, f.failure):
                continue
            early, late = _phase_medians(con, f, channel)
            if early is None or late is None:    # stopped all phase long (a shut-in)
                assert _stopped(clean_run.truth, f), (f, channel)
                continue
            assert (late - early) * sign > 0.02 * abs(early), (f.compressor_id, f.mode,
                                                               channel, early, late)
            checked += 1
    assert checked > 40


def test_faults_cross_a_warning_before_failure(clean_run, con):
    for f in clean_run.truth.faults:
        if f.failure is None:
            continue
        template, op, level = WARNINGS[f.mode]
        channel = template.format(s=f.stage)
        if _troubled(clean_run.truth, f, channel, f.onset, f.failure):
            continue
        if level is None:
            early, _ = _phase_medians(con, f, channel)
            if early is None:
                assert _stopped(clean_run.truth, f), f
                continue
            level = 0.95 * early if op == "<" else min(300.0, early + 25.0)
        first = con.execute(
            f"""select min(ts) from t where compressor_id = ? and speed_rpm > 0
                and ts < ? and {channel} {op} ?""",
            [f.compressor_id, f.failure, level]).fetchone()[0]
        assert first is not None, (f.compressor_id, f.mode)
        assert f.failure - first >= timedelta(hours=2), (f.compressor_id, f.mode, first)


def test_failed_units_shut_down_and_stay_down(clean_run, con):
    for f in clean_run.truth.faults:
        if f.failure is None:
            continue
        channels = ["speed_rpm"] + [
            c for c in ("flow_mmscfd", "oil_pressure_psig")
            if not sensor_trouble(clean_run.truth, f.compressor_id, c, f.failure,
                                  clean_run.truth.window_end)]
        after = con.execute(
            f"select count(*), {', '.join(f'max({c})' for c in channels)} "
            "from t where compressor_id = ? and ts >= ?",
            [f.compressor_id, f.failure]).fetchone()
        assert after[0] > 0 and set(after[1:]) == {0.0}, (f.compressor_id, channels, after)
        running_before = con.execute(
            "select count(*) from t where compressor_id = ? and ts < ? and speed_rpm > 0",
            [f.compressor_id, f.failure]).fetchone()[0]
        assert running_before > 0
        stops = [s for s in clean_run.truth.shutdowns
                 if s.compressor_id == f.compressor_id and s.kind == "failure"]
        assert [(s.start, s.end) for s in stops] == [(f.failure, None)]
