"""Defect counts in ground_truth.json equal what is in the files, and rates match the config."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from altaviz.core.telemetry import CHANNELS, LANDING_SCHEMA, TEXT_LANDING_SCHEMA
from altaviz.simulator import DirtyConfig
from tests.simulator.conftest import excused, field_nulls

REQUIRED = [c.name for c in CHANNELS if c.group == "frame"]


@pytest.fixture(scope="module")
def found(dirty_run):
    """Recount every defect from the files alone (a channel the field left null, a dropout or
    a missing instrument, is not a defect)."""
    known = {c["compressor_id"] for c in dirty_run.fleet["compressors"]}
    nulls = field_nulls(dirty_run.truth)
    counts = Counter()
    for path in sorted(dirty_run.result.landing_dir.rglob("*.parquet")):
        t = pq.read_table(path)
        rows = t.to_pylist()
        arrived = rows[0]["arrived_at"]
        text = t.schema == TEXT_LANDING_SCHEMA
        counts["files"] += 1
        counts["wrong_type_files"] += text
        if max(r["ts"] for r in rows if r["ts"] is not None) < arrived - timedelta(hours=1.5):
            counts["late_batches"] += 1
            counts["late_rows"] += len(rows)
        seen = Counter(tuple(r.values()) for r in rows)
        counts["duplicate_rows"] += sum(n - 1 for n in seen.values())
        for r in rows:
            # an unknown id hides whose field nulls a row carries: such rows hold no null defect
            if r["compressor_id"] is None or r["ts"] is None:
                counts["null_rows"] += 1
                counts["null_key_rows"] += r["compressor_id"] is None or r["ts"] is None
            elif r["compressor_id"] not in known:
                counts["unknown_compressor_rows"] += 1
            elif any(r[c] is None and not excused(nulls, r["compressor_id"], c, r["ts"])
                     for c in REQUIRED):
                counts["null_rows"] += 1
            bad_values = wrong = 0
            for c in CHANNELS:
                v = r[c.name]
                if v is None:
                    continue
                if text:
                    try:
                        v = float(v)
                    except ValueError:
                        wrong += 1
                        continue
                bad_values += not c.low <= v <= c.high
            counts["out_of_range_values"] += bad_values
            counts["out_of_range_rows"] += bad_values > 0
            counts["wrong_type_rows"] += wrong > 0
    return counts


@pytest.mark.parametrize("key", ["late_batches", "late_rows", "duplicate_rows", "null_rows",
                                 "null_key_rows", "unknown_compressor_rows", "out_of_range_values",
                                 "out_of_range_rows", "wrong_type_rows", "wrong_type_files"])
def test_ground_truth_counts_match_files(dirty_run, found, key):
    assert dirty_run.truth.defects[key] == found[key] > 0


def test_rows_add_up(dirty_run, found):
    d = dirty_run.truth.defects
    truth = dirty_run.truth
    assert truth.rows_written == dirty_run.table.num_rows
    assert truth.files_written == found["files"]
    assert truth.rows_written == (truth.readings_generated - d["missing_readings"]
                                  - d["comm_gap_readings"] + d["duplicate_rows"])


def test_rates_match_config(dirty_run):
    cfg = DirtyConfig(**dirty_run.truth.config["dirty"])
    d = dirty_run.truth.defects
    readings = dirty_run.truth.readings_generated
    rows = dirty_run.truth.rows_written

    def near(actual, expected, rel=0.3):
        assert abs(actual - expected) <= rel * expected + 3, (actual, expected)

    near(d["missing_readings"], cfg.missing_rate * (readings - d["comm_gap_readings"]))
    near(d["duplicate_rows"], cfg.duplicate_rate * rows)
    near(d["out_of_range_rows"], cfg.out_of_range_rate * rows)
    near(d["null_rows"], cfg.null_rate * rows)
    near(d["unknown_compressor_rows"], cfg.unknown_compressor_rate * rows)
    files = dirty_run.truth.files_written
    near(d["wrong_type_files"], cfg.text_file_rate * files, rel=0.35)
    batches = 24 * dirty_run.truth.config["days"] * 3
    near(d["late_batches"], cfg.late_batch_rate * batches, rel=0.45)
    unit_days = 200 * dirty_run.truth.config["days"]
    near(d["comm_gaps"], cfg.comm_gaps_per_unit_day * unit_days, rel=0.45)
    lo, hi = cfg.comm_gap_hours
    per_gap = d["comm_gap_readings"] / d["comm_gaps"]
    assert 6 * lo * 0.8 <= per_gap <= 6 * hi, per_gap


def test_late_files_arrive_hours_late(dirty_run):
    cfg = DirtyConfig(**dirty_run.truth.config["dirty"])
    late = 0
    for path in dirty_run.result.files:
        t = pq.read_table(path, columns=["ts", "arrived_at"])
        arrived = t.column("arrived_at")[0].as_py()
        newest = pc.max(t.column("ts")).as_py()
        lag = arrived - newest
        assert lag > timedelta(0)
        if lag > timedelta(hours=1.5):
            late += 1
            assert lag <= timedelta(hours=cfg.late_delay_hours[1] + 1.2)
        assert t.column("arrived_at").unique().to_pylist() == [arrived]
    assert late == dirty_run.truth.defects["late_batches"]


def test_clean_run_has_no_defects(clean_run):
    assert set(clean_run.truth.defects.values()) == {0}
    assert clean_run.truth.rows_written == clean_run.truth.readings_generated
    for path in clean_run.result.files[:50]:
        assert pq.read_schema(path) == LANDING_SCHEMA
