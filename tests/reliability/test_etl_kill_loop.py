"""The ETL killed with SIGKILL at random points over many runs, while new landing files keep
arriving: the final state (bronze, silver and quarantine counts, every aggregate row) equals
one clean run over the same files in a separate lake and database.

Each iteration drops the next chunk of simulated gateway files into the landing folder, starts
``altaviz etl run`` as a real process and kills it after a random delay (fixed seed). Kills land
before the run starts, inside any stage or after it finished; etl_runs tells which.
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from altaviz.core import db
from altaviz.core.duck import connect as duck_connect
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, series, write_landing
from tests.reliability.conftest import clean_env, fresh_fleet_db

simulator = pytest.importorskip("altaviz.simulator")

AGG = ("SELECT org_id, compressor_id, metric, hour, n, mean, min, max, stddev, mean_4h, min_4h, "
       "max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, outliers, "
       "late FROM sensor_readings_agg ORDER BY org_id, compressor_id, metric, hour")


def _etl(data_dir: Path, landing: Path, url: str) -> subprocess.Popen[bytes]:
    env = clean_env(ALTAVIZ_DATA_DIR=str(data_dir), ALTAVIZ_LANDING_DIR=str(landing),
                    ALTAVIZ_DATABASE_URL=url, ALTAVIZ_TEMPORAL_ADDRESS="127.0.0.1:1")
    return subprocess.Popen([sys.executable, "-m", "altaviz.app.cli", "etl", "run", "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]


def _state(data_dir: Path, url: str) -> dict[str, Any]:
    con, lake = duck_connect(), Lake(data_dir / "lake")
    counts: dict[str, Any] = {}
    for table in ("bronze", "silver", "quarantine"):
        counts[table] = con.execute(f"SELECT count(*), count(DISTINCT source_file) "
                                    f"FROM delta_scan('{lake.uri(table)}')").fetchall()[0]
    counts["silver_keys"] = con.execute(
        f"SELECT count(DISTINCT (compressor_id, ts)) FROM delta_scan('{lake.uri('silver')}')"
    ).fetchall()[0]
    con.close()
    with db.connect(url) as conn, conn.transaction():
        counts["aggregates"] = conn.execute(AGG).fetchall()
    return counts


def _copy(files: list[Path], src: Path, dst: Path) -> None:
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def _run_count(url: str, running: bool = False) -> int:
    with db.connect(url) as conn, db.admin(conn):
        row = conn.execute("SELECT count(*) FROM etl_runs WHERE status = 'running' OR NOT %s",
                           [running]).fetchone()
    return int(row[0]) if row else 0


def _wait_registered(proc: subprocess.Popen[bytes], url: str, before: int) -> bool:
    """Wait until the run has a row in etl_runs (True) or the process ended (False)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _run_count(url) > before:
            return True
        time.sleep(0.05)
    return False


def kill_loop(tmp: Path, url_killed: str, url_clean: str, kills: int, seed: int
              ) -> dict[str, Any]:
    """Run the scenario; returns the measured figures (asserts equality inside)."""
    sim = simulator.simulate(simulator.SimulationConfig(compressors=6, days=2, seed=seed,
                                                        out=tmp / "sim"))
    for url in (url_killed, url_clean):
        with db.connect(url) as conn:
            load_fleet(conn, sim.fleet)
    src = sim.landing_dir
    files = sorted(src.rglob("*.parquet"), key=lambda p: (p.parent.name, p.name))
    chunks = [files[i::kills + 1] for i in range(kills + 1)]
    chunks = [sorted(c, key=lambda p: (p.parent.name, p.name)) for c in chunks]
    rng = random.Random(seed)
    killed_dir, landing = tmp / "killed", tmp / "killed" / "landing"
    landing.mkdir(parents=True)
    started = time.monotonic()
    delays = []
    mid_run = 0
    for i, chunk in enumerate(chunks[:-1]):
        _copy(chunk, src, landing)
        before = _run_count(url_killed)
        proc = _etl(killed_dir, landing, url_killed)
        # Every fourth kill counts from the process start (it may land before the run
        # registers); the others from the moment the run registered, so that they land
        # inside the stages however slow the machine is (under load, Python's start-up alone
        # took most of a fixed delay).
        if i % 4 and _wait_registered(proc, url_killed, before):
            delay = rng.uniform(0.0, 1.5)
        else:
            delay = rng.uniform(0.2, 1.2)
        delays.append(round(delay, 2))
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            # this run registered and is still running (earlier ones were closed by it)
            mid_run += (_run_count(url_killed) > before
                        and _run_count(url_killed, running=True) > 0)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            assert proc.stderr is not None
            proc.stderr.close()
    _copy(chunks[-1], src, landing)
    final = _etl(killed_dir, landing, url_killed)
    _finish(final)
    killed_seconds = time.monotonic() - started

    # the reference: the same arrivals, each chunk loaded by one uninterrupted run
    clean_dir = tmp / "clean"
    clean_landing = clean_dir / "landing"
    clean_landing.mkdir(parents=True)
    cfg = Settings(data_dir=clean_dir, landing_dir=clean_landing)
    t0 = time.monotonic()
    for chunk in chunks:
        _copy(chunk, src, clean_landing)
        run_pipeline(cfg, url_clean)
    clean_seconds = time.monotonic() - t0

    with db.connect(url_killed) as conn, db.admin(conn):
        # a run cut off mid-way is marked failed as 'interrupted' by the next run
        runs = dict(conn.execute(
            "SELECT CASE WHEN error LIKE 'interrupted%%' THEN 'interrupted' ELSE status END, "
            "count(*) FROM etl_runs GROUP BY 1").fetchall())
    killed_state, clean_state = _state(killed_dir, url_killed), _state(clean_dir, url_clean)
    assert killed_state["bronze"] == clean_state["bronze"]
    assert killed_state["silver"][0] == clean_state["silver"][0]
    assert killed_state["silver_keys"] == clean_state["silver_keys"]
    assert killed_state["quarantine"][0] == clean_state["quarantine"][0]
    assert len(killed_state["aggregates"]) == len(clean_state["aggregates"])
    # Floats may differ in the last bits: runs over other batch boundaries sum the 24-hour
    # windows in another order (measured: relative differences ~1e-13). Keys, counts and the
    # late flag must be identical. The outlier count (a[18]) is reported, not asserted: a
    # flag is judged against the baseline known when its batch is processed, and a resumed
    # run that merges two arrivals into one batch lets the later arrival's (late) readings
    # into the earlier one's baseline. (Flags no longer depend on whether the history came
    # through gold or through silver not yet in gold: see the test below.)
    outliers_differ = 0
    for a, b in zip(killed_state["aggregates"], clean_state["aggregates"], strict=True):
        assert a[:5] == b[:5] and a[19:] == b[19:], (a, b)
        outliers_differ += a[18] != b[18]
        assert all(x == y or (x is not None and y is not None and math.isclose(
            x, y, rel_tol=1e-9, abs_tol=1e-9)) for x, y in zip(a[5:18], b[5:18], strict=True)), \
            (a, b)

    return {"kills": kills, "mid_run_kills": mid_run, "outliers_differ": outliers_differ,
            "delays": delays, "runs": runs,
            "files": len(files),
            "bronze_rows": clean_state["bronze"][0], "agg_rows": len(clean_state["aggregates"]),
            "killed_seconds": round(killed_seconds, 1), "clean_seconds": round(clean_seconds, 1)}


def test_etl_killed_at_random_points_equals_one_clean_run(
        tmp_path: Path, db_url: str, pg_server: Any, pg_template: str) -> None:
    from tests.conftest import _fresh_database

    figures = kill_loop(tmp_path, db_url, _fresh_database(pg_server, pg_template), kills=8,
                        seed=20261125)
    print("kill loop:", figures)
    # the loop really interrupted runs mid-way (not only before start or after the end)
    # (a kill that found the run 'running' may still land just after it finished)
    assert figures["mid_run_kills"] >= 3, figures
    assert figures["runs"].get("interrupted", 0) >= figures["mid_run_kills"] - 1, figures
    assert "running" not in figures["runs"], figures


@pytest.mark.slow
def test_etl_killed_many_times_equals_one_clean_run(
        tmp_path: Path, db_url: str, pg_server: Any, pg_template: str) -> None:
    from tests.conftest import _fresh_database

    figures = kill_loop(tmp_path, db_url, _fresh_database(pg_server, pg_template), kills=30,
                        seed=7)
    print("kill loop (slow):", figures)
    assert figures["runs"].get("interrupted", 0) >= figures["mid_run_kills"] - 2 >= 8, figures



# --- outlier flags depend on batch boundaries -------------------------------------------------

def _history_then_spike(landing: Path, part: str) -> None:
    if part == "history":  # 24 hours of 170-172 F
        rows = series("COMP-0001", T0, 24)
        for i, r in enumerate(rows):
            r["oil_temp_f"] = 170.0 + (i % 3)
        write_landing(landing, rows, T0 + timedelta(hours=24, minutes=5), org="a")
    else:  # the next hour at 200 F: ~35 sigma above the trailing 24 hours
        write_landing(landing, series("COMP-0001", T0 + timedelta(hours=24), 1,
                                      oil_temp_f=200.0), T0 + timedelta(hours=25, minutes=5),
                      org="b")


def _flagged(cfg: Settings) -> int:
    con, lake = duck_connect(), Lake(cfg.lake_path)
    try:
        return int(con.execute(
            "SELECT count(*) FILTER (WHERE list_contains(outlier_metrics, 'oil_temp_f')) "
            f"FROM delta_scan('{lake.uri('silver')}')").fetchall()[0][0])
    finally:
        con.close()


def test_outlier_flag_does_not_depend_on_batch_boundaries(
        tmp_path: Path, pg_server: Any, pg_template: str) -> None:
    flags = {}
    for mode in ("one_run", "two_runs"):
        url = fresh_fleet_db(pg_server, pg_template)
        root = tmp_path / mode
        cfg = Settings(data_dir=root, landing_dir=root / "landing", lake_dir=root / "lake",
                       late_arrival_minutes=240)
        _history_then_spike(cfg.landing_path, "history")
        if mode == "two_runs":
            run_pipeline(cfg, url)
        _history_then_spike(cfg.landing_path, "spike")
        run_pipeline(cfg, url)
        flags[mode] = _flagged(cfg)
    assert flags["one_run"] == 6  # the spike is an outlier: holds today
    assert flags["two_runs"] == flags["one_run"], flags


def test_outlier_baseline_includes_silver_not_yet_in_gold(
        tmp_path: Path, pg_server: Any, pg_template: str) -> None:
    """A run stopped after silver (history in silver, not yet in gold): the next run's spike is
    still judged against that history."""
    from etl.pipeline import run_stage

    url = fresh_fleet_db(pg_server, pg_template)
    cfg = Settings(data_dir=tmp_path, landing_dir=tmp_path / "landing",
                   lake_dir=tmp_path / "lake", late_arrival_minutes=240)
    _history_then_spike(cfg.landing_path, "history")
    run_stage("bronze", cfg, url)
    run_stage("silver", cfg, url)          # ... and the run stops here
    _history_then_spike(cfg.landing_path, "spike")
    run_pipeline(cfg, url)
    assert _flagged(cfg) == 6
