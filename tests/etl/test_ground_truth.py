"""Against the simulator's ground truth: every injected defect lands where it should and no
valid reading is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core.duck import connect as duck_connect
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from altaviz.core.telemetry import CHANNELS
from etl.lake import Lake
from etl.pipeline import run_pipeline

simulator = pytest.importorskip("altaviz.simulator")


def test_every_defect_lands_where_it_should(tmp_path: Path, db_url: str,
                                            conn: psycopg.Connection[Any]) -> None:
    dirty = simulator.DirtyConfig(duplicate_rate=0.01, out_of_range_rate=0.005, null_rate=0.005,
                                  text_file_rate=0.2, wrong_type_rate=0.05,
                                  unknown_compressor_rate=0.005, late_batch_rate=0.1)
    # calm: the row defects alone, without the nulls a field leaves (dropouts, instruments)
    result = simulator.simulate(simulator.SimulationConfig(
        compressors=12, days=2, seed=11, out=tmp_path / "sim", dirty=dirty, field=None))
    truth = result.ground_truth.defects
    assert min(truth[k] for k in ("duplicate_rows", "out_of_range_rows", "null_rows",
                                  "wrong_type_rows", "unknown_compressor_rows", "late_rows")) > 0
    load_fleet(conn, result.fleet)
    # on-time hourly files reach us up to ~70 minutes after their first reading
    settings = Settings(data_dir=tmp_path, landing_dir=result.landing_dir,
                        lake_dir=tmp_path / "lake", late_arrival_minutes=90)
    summary = run_pipeline(settings, db_url)
    assert summary.files == result.ground_truth.files_written
    assert summary.rows_in == result.ground_truth.rows_written
    # only readings that cannot be placed are quarantined; a null, out-of-range or unparseable
    # channel is that channel missing from a reading that is kept
    assert truth["null_rows"] > truth["null_key_rows"]
    assert summary.quarantined == {k: v for k, v in {
        "null_required": truth["null_key_rows"],
        "unknown_compressor": truth["unknown_compressor_rows"]}.items() if v}
    assert summary.duplicates == truth["duplicate_rows"]
    con, lake = duck_connect(), Lake(settings.lake_path)
    # late rows as sent (the truth counts every row of a late file, defective ones too) ...
    late_sent = con.execute(
        f"SELECT count(*) FROM delta_scan('{lake.uri('bronze')}') "
        "WHERE arrived_at - ts > INTERVAL 90 MINUTES").fetchone()
    assert late_sent == (truth["late_rows"],)
    # ... and every late row that reached silver carries the flag
    late_dropped = con.execute(f"""
        SELECT count(*) FROM delta_scan('{lake.uri('quarantine')}')
        WHERE arrived_at - ts > INTERVAL 90 MINUTES""").fetchone()
    assert late_dropped is not None
    assert truth["late_rows"] - late_dropped[0] - summary.duplicates <= summary.rows_late
    assert summary.rows_late <= truth["late_rows"] - late_dropped[0]
    silver = con.execute(f"SELECT count(*), count(DISTINCT (compressor_id, ts)) "
                         f"FROM delta_scan('{lake.uri('silver')}')").fetchone()
    valid = (result.ground_truth.rows_written - truth["duplicate_rows"]
             - sum(summary.quarantined.values()))
    assert silver == (valid, valid)
    frame = [c.name for c in CHANNELS if c.group == "frame"]
    missing = con.execute(
        f"SELECT {' + '.join(f'count(*) FILTER (WHERE {c} IS NULL)' for c in frame)} "
        f"FROM delta_scan('{lake.uri('silver')}')").fetchone()
    assert missing == (truth["out_of_range_values"] + truth["wrong_type_rows"]
                       + truth["null_rows"] - truth["null_key_rows"],)
