"""Telemetry as field gateways send it: a dead sensor (its channel null in every reading) and a
NaN in a stage channel. Every reading loads, the data-quality checks name the missing channel
and the sensor that went offline, and the rules on the unit's other metrics still fire."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import psycopg

from altaviz.core.duck import connect as duck_connect
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.pipeline import run_pipeline
from rules.evaluate import evaluate
from rules.loader import DEFAULT_RULES, load_rule_set
from tests.etl.landing import T0, series, write_landing

HOURS = 5


def test_a_dead_sensor_and_a_nan_channel_keep_the_unit_watched(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    arrive = T0 + timedelta(hours=HOURS, minutes=5)
    # COMP-0001: the oil-temperature transmitter is dead (null in every reading) while frame
    # vibration sits above its warning level
    write_landing(settings.landing_path,
                  series("COMP-0001", T0, HOURS, wobble=True, oil_temp_f=None,
                         vibration_frame_mm_s=10.0), arrive, org="acme")
    # COMP-0003: the gateway sends NaN for stage 2's discharge temperature (an optional,
    # per-stage channel) while oil pressure sits below its warning level
    write_landing(settings.landing_path, series("COMP-0003", T0, HOURS, wobble=True,
                                                stage2_discharge_temp_f=math.nan,
                                                oil_pressure_psig=47.0), arrive, org="bravo")
    readings = 2 * HOURS * 6
    summary = run_pipeline(settings, db_url, run_id="field", as_of=arrive)

    # every reading is loaded, none quarantined
    assert summary.rows_in == readings and summary.quarantined == {}
    con, lake = duck_connect(), Lake(settings.lake_path)
    silver = con.execute(
        f"SELECT count(*), count(oil_temp_f), count(stage2_discharge_temp_f), "
        f"count(vibration_frame_mm_s) FROM delta_scan('{lake.uri('silver')}')").fetchone()
    assert silver == (readings, HOURS * 6, HOURS * 6, readings)

    # the missing channels show in the data-quality checks, with the sensors offline
    with conn.transaction():
        rows = conn.execute(
            "SELECT compressor_id, check_type, measured, passed, details "
            "FROM data_quality_checks WHERE run_id = 'field' "
            "AND check_type IN ('channels', 'sensor_offline', 'consistency')").fetchall()
    checks = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    n = HOURS * 6
    assert checks[("COMP-0001", "channels")] == (
        1.0, False, {"readings": n, "missing": {"oil_temp_f": n}})
    assert checks[("COMP-0001", "sensor_offline")] == (
        1.0, False, {"running_readings": n, "offline": ["oil_temp_f"]})
    assert checks[("COMP-0003", "channels")] == (
        1.0, False, {"readings": n, "missing": {"stage2_discharge_temp_f": n}})
    assert checks[("COMP-0003", "sensor_offline")] == (
        1.0, False, {"running_readings": n, "offline": ["stage2_discharge_temp_f"]})
    # a missing channel is not a schema violation of the reading
    assert checks[("COMP-0001", "consistency")][:2] == (0.0, True)

    # the rules on the other metrics still fire on both units; the dead channel raises its
    # sensor-offline notice while its machine rules and the no-data rule stay quiet
    rule_set = load_rule_set(DEFAULT_RULES)
    last = T0 + timedelta(hours=HOURS - 1)
    fired = set()
    for org in ("acme", "bravo"):
        result = evaluate(conn, rule_set, org, (T0, last))
        fired |= {(b.compressor_id, b.rule_id, b.severity) for b in result.breaches}
    assert ("COMP-0001", "vibration_frame_high", "warning") in fired
    assert ("COMP-0003", "oil_pressure_low", "warning") in fired
    assert ("COMP-0001", "oil_temp_offline", "warning") in fired
    assert ("COMP-0003", "stage2_discharge_temp_offline", "warning") in fired
    assert not {f for f in fired if f[0] in ("COMP-0001", "COMP-0003")
                and (f[1] in ("oil_temp_high", "data_missing")
                     or ("stage2" in f[1] and not f[1].endswith("_offline")))}
    with conn.transaction():
        agg = conn.execute(
            "SELECT DISTINCT compressor_id, metric FROM sensor_readings_agg "
            "WHERE metric IN ('oil_temp_f', 'stage2_discharge_temp_f', 'stage2_ratio') "
            "ORDER BY 1, 2").fetchall()
    # the dead channels have no aggregates; stage 2's ratio (its pressures) still does
    assert agg == [("COMP-0001", "stage2_discharge_temp_f"), ("COMP-0001", "stage2_ratio"),
                   ("COMP-0003", "oil_temp_f"), ("COMP-0003", "stage2_ratio")]
