"""The accuracy check judges values, not operation: a healthy simulated fleet (load changes,
stops and starts, hot spells, row defects) passes, while a stuck transmitter, a spiking channel
and a channel that changes its unit fail with a reason naming the channel and what is wrong.
Each row defect the simulator injects fails the check that measures it on the unit it hit."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from altaviz.app.commands.dq import accuracy_reason, reason
from altaviz.core.fleet import Fleet
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from altaviz.core.telemetry import CHANNELS
from altaviz.simulator import FieldConfig, SimulationConfig, simulate
from altaviz.simulator.config import DirtyConfig
from altaviz.simulator.dirty import REQUIRED_CHANNELS, DefectCounts, IdPool, Rows, encode
from etl.pipeline import run_pipeline
from etl.quality import ACCURACY_MAX_SHARE
from tests.etl.landing import BASE, T0, reading, write_landing

HOURS = 30


def _accuracy(conn: psycopg.Connection[Any], run_id: str) -> dict[str, tuple[Any, ...]]:
    with conn.transaction():
        rows = conn.execute(
            "SELECT compressor_id, measured, threshold, passed, details FROM "
            "data_quality_checks WHERE run_id = %s AND check_type = 'accuracy'",
            [run_id]).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _outlier_shares(lake: Path) -> dict[str, float]:
    """Each unit's share of readings silver flagged (what accuracy used to count)."""
    rows = DeltaTable(str(lake / "silver")).to_pyarrow_table(
        columns=["compressor_id", "outlier_metrics"]).to_pylist()
    n: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for r in rows:
        n[r["compressor_id"]] = n.get(r["compressor_id"], 0) + 1
        flagged[r["compressor_id"]] = (flagged.get(r["compressor_id"], 0)
                                       + bool(r["outlier_metrics"]))
    return {c: flagged[c] / n[c] for c in n}


def _simulated(settings: Settings, conn: psycopg.Connection[Any], db_url: str,
               field: FieldConfig, seed: int) -> tuple[Any, dict[str, tuple[Any, ...]]]:
    start = datetime(2025, 6, 1, tzinfo=UTC)
    sim = simulate(SimulationConfig(compressors=10, days=4, seed=seed, start=start,
                                    out=settings.landing_path.parent / "sim",
                                    fault_share=0.0, field=field))
    load_fleet(conn, sim.fleet)
    settings = settings.model_copy(update={"landing_dir": settings.landing_path.parent
                                           / "sim" / "landing"})
    run_pipeline(settings, db_url, run_id="sim", as_of=start + timedelta(days=4))
    return sim, _accuracy(conn, "sim")


def test_a_healthy_simulated_fleet_passes_accuracy(settings: Settings, db_url: str,
                                                   conn: psycopg.Connection[Any]) -> None:
    # field behaviour (nominations, hot spells, stops, fixed and variable speed) and the
    # default row defects, but no frozen transmitter and no machine fault
    _, checks = _simulated(settings, conn, db_url,
                           FieldConfig(stuck_sensors_per_unit_day=0), seed=5)
    assert len(checks) == 10
    assert {c: v[0] for c, v in checks.items() if not v[2]} == {}
    # silver's statistical flag fires on these healthy units (load changes, starts and
    # stops): counted as accuracy, as it used to be, several would fail
    shares = _outlier_shares(settings.lake_path)
    assert sum(s > 0.01 for s in shares.values()) >= 3


def test_a_stuck_transmitter_fails_accuracy_naming_its_channel(
        settings: Settings, db_url: str, conn: psycopg.Connection[Any]) -> None:
    sim, checks = _simulated(settings, conn, db_url,
                             FieldConfig(stuck_sensors_per_unit_day=0.4, stuck_hours=(12, 24),
                                         dropouts_per_unit_day=0, shut_ins_per_unit_day=0),
                             seed=8)
    stuck: dict[str, dict[str, list[float]]] = {}
    for e in sim.ground_truth.nuisance_events:
        if e.kind == "stuck_sensor":
            stuck.setdefault(e.compressor_id, {}).setdefault(e.channel, []).append(e.magnitude)
    assert stuck, "the simulator froze no transmitter"
    failing = {c for c, v in checks.items() if not v[2]}
    # every unit with a frozen transmitter fails, and only those
    assert failing == set(stuck)
    for comp in failing:
        measured, threshold, _, details = checks[comp]
        assert measured > threshold == ACCURACY_MAX_SHARE
        channel = details["worst_channel"]
        assert channel in stuck[comp]
        wrong = details["channels"][channel]
        assert wrong["stuck"] >= 3
        # the value it froze on (of the channel's stuck stretches, the highest)
        assert wrong["stuck_value"] == pytest.approx(max(stuck[comp][channel]), abs=0.06)
        assert "stuck at" in accuracy_reason(measured, threshold, details)


def _noisy(comp: str, hours: int, rng: random.Random, start: datetime = T0,
           **override: Any) -> list[dict[str, Any]]:
    """Readings every 10 minutes with 1% noise on every channel (a live transmitter never
    repeats itself for hours); ``override`` maps a channel to ``f(i, value)``."""
    rows = []
    for i in range(hours * 6):
        values = {k: round(v * (1 + rng.gauss(0, 0.01)), 2) for k, v in BASE.items()}
        for name, f in override.items():
            values[name] = f(i, values[name])
        rows.append(reading(comp, start + timedelta(minutes=10 * i), **values))
    return rows


def test_spikes_and_a_unit_change_fail_while_load_changes_and_restarts_pass(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(3)
    late = 24 * 6     # readings after the first day, when the baseline is full

    def stop(i: int) -> bool:     # stopped for 2 hours on the second day
        return late + 6 <= i < late + 18

    rows = [
        # a spiking oil temperature: every 4th reading of the last 6 hours 40 F high
        *_noisy("COMP-0001", HOURS, rng,
                oil_temp_f=lambda i, v: v + 40 if i >= late and i % 4 == 0 else v),
        # healthy: speed and flow step down with load, then a stop and a restart, with the
        # temperatures cooling toward ambient while stopped and warming up after
        *_noisy("COMP-0002", HOURS, rng,
                speed_rpm=lambda i, v: 0.0 if stop(i) else v * (0.75 if i >= late else 1),
                flow_mmscfd=lambda i, v: 0.0 if stop(i) else v * (0.75 if i >= late else 1),
                oil_temp_f=lambda i, v: 90.0 + i % 3 if stop(i) else v,
                bearing_temp_max_f=lambda i, v: 95.0 + i % 3 if stop(i) else v,
                stage1_discharge_temp_f=lambda i, v: 100.0 + i % 3 if stop(i) else v),
        # a stage 1 discharge temperature that starts reporting in Celsius
        *_noisy("COMP-0003", HOURS, rng,
                stage1_discharge_temp_f=lambda i, v: (v - 32) / 1.8 if i >= late else v),
        *_noisy("COMP-0004", HOURS, rng),
    ]
    write_landing(settings.landing_path, rows, T0 + timedelta(hours=HOURS, minutes=5))
    run_pipeline(settings, db_url, run_id="r1", as_of=T0 + timedelta(hours=HOURS + 1))
    checks = _accuracy(conn, "r1")
    shares = _outlier_shares(settings.lake_path)
    # silver flagged the healthy unit's load step, stop and restart...
    assert shares["COMP-0002"] > 0.02
    # ...which accuracy does not count; the healthy units pass
    assert checks["COMP-0002"][2] and checks["COMP-0004"][2]
    assert checks["COMP-0002"][0] == 0.0

    measured, threshold, passed, details = checks["COMP-0001"]
    assert not passed and measured > threshold
    assert details["worst_channel"] == "oil_temp_f"
    assert details["channels"]["oil_temp_f"]["outliers"] >= 3
    assert details["channels"]["oil_temp_f"]["stuck"] == 0
    assert accuracy_reason(measured, threshold, details) == (
        f"oil temp: {details['channels']['oil_temp_f']['outliers']} outliers "
        f"({measured:.1%} of 180 steady running readings, limit 2%)")

    measured, threshold, passed, details = checks["COMP-0003"]
    assert not passed and measured > threshold
    assert details["worst_channel"] == "stage1_discharge_temp_f"
    assert details["channels"]["stage1_discharge_temp_f"]["outliers"] >= 3


def test_an_hourly_run_sees_a_stuck_run_longer_than_its_hour(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(4)
    day = 24 * 6
    rows = _noisy("COMP-0001", HOURS, rng,
                  vibration_frame_mm_s=lambda i, v: 3.01 if i >= day else v)
    write_landing(settings.landing_path, rows[:day], T0 + timedelta(hours=24, minutes=5))
    run_pipeline(settings, db_url, run_id="day", as_of=T0 + timedelta(hours=25))
    assert _accuracy(conn, "day")["COMP-0001"][2]
    verdicts = []
    for h in range(24, HOURS):
        write_landing(settings.landing_path, rows[6 * h:6 * (h + 1)],
                      T0 + timedelta(hours=h + 1, minutes=5))
        run_pipeline(settings, db_url, run_id=f"h{h}", as_of=T0 + timedelta(hours=h + 1))
        verdicts.append(_accuracy(conn, f"h{h}")["COMP-0001"])
    # each hourly batch holds 6 readings; with the 5 hours before it from silver (36 judged),
    # the value frozen at reading 144 has repeated 24 times at reading 167 (hour 27, one
    # stuck reading: under the 3 that count) and fails from hour 28 on
    assert [v[3]["judged"] for v in verdicts] == [36] * 6
    assert [v[3]["channels"].get("vibration_frame_mm_s", {}).get("stuck", 0)
            for v in verdicts] == [0, 0, 0, 1, 7, 13]
    assert [v[2] for v in verdicts] == [True, True, True, True, False, False]
    measured, threshold, _, details = verdicts[-1]
    assert details["worst_channel"] == "vibration_frame_mm_s"
    assert details["channels"]["vibration_frame_mm_s"]["stuck_value"] == 3.01
    assert "frame vibration: stuck at 3.01 for" in accuracy_reason(measured, threshold, details)


def _all_checks(conn: psycopg.Connection[Any], run_id: str, comp: str
                ) -> dict[str, tuple[Any, ...]]:
    with conn.transaction():
        rows = conn.execute(
            "SELECT check_type, measured, threshold, passed, details FROM data_quality_checks "
            "WHERE run_id = %s AND compressor_id = %s", [run_id, comp]).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.mark.parametrize(("kind", "fails"), [
    ("out_of_range_rate", {"channels"}),        # a broken sensor's -9999: channel missing
    # null values (channel missing) and null keys (the reading lost to quarantine): one
    # channel or the readings' count, whichever the draw hit harder
    ("null_rate", {"channels", "completeness"}),
    ("wrong_type_rate", {"channels"}),          # '#VALUE!' in a text file
    ("unknown_compressor_rate", {"completeness"}),  # its readings filed under another id
    ("duplicate_rate", set()),                  # exact copies: dropped, nothing wrong
])
def test_each_row_defect_of_the_simulator_shows_on_the_unit_it_hit(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        kind: str, fails: set[str]) -> None:
    rng = random.Random(5)
    clean = _noisy("COMP-0001", 6, rng)
    rows = Rows(unit=np.zeros(len(clean), dtype=np.int64),
                ts_us=np.array([int(r["ts"].timestamp() * 1e6) for r in clean], dtype=np.int64),
                values={c.name: np.array([np.nan if r[c.name] is None else r[c.name]
                                          for r in clean]) for c in CHANNELS})
    dirt = DirtyConfig.none().model_copy(update={kind: 0.2})
    counts = DefectCounts()
    arrived = T0 + timedelta(hours=6, minutes=5)
    table = encode(rows, int(arrived.timestamp() * 1e6), IdPool(("COMP-0001",)), dirt,
                   kind == "wrong_type_rate", np.random.default_rng(1), counts)
    folder = settings.landing_path / f"arrival_date={arrived.date().isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / f"{arrived:%Y%m%dT%H%M%S}-gw-000001.parquet")
    summary = run_pipeline(settings, db_url, run_id="dirty", as_of=T0 + timedelta(hours=7))
    checks = _all_checks(conn, "dirty", "COMP-0001")
    failed = {k for k, v in checks.items() if not v[2]}
    if not fails:
        assert failed == set()
        assert summary.duplicates == counts.duplicate_rows > 0
        return
    assert failed and failed <= fails
    for check in failed:
        measured, threshold, _, details = checks[check]
        text = reason(check, measured, threshold, details)
        if check == "channels":
            # the reason names the worst channel, one the defect hit
            worst = max(details["missing"].items(), key=lambda kv: kv[1])[0]
            assert worst in REQUIRED_CHANNELS
            assert "of readings miss a channel" in text
        else:
            assert "of readings missing" in text
