"""Landing folder layout: arrival partitions, names that sort by arrival, one file per
organization per arrival hour, and the fleet/ground-truth files."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime, timedelta

import pyarrow.parquet as pq
import pytest

from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet
from altaviz.simulator import GroundTruth, SimulationConfig, simulate

NAME = re.compile(
    r"^([a-z0-9-]+)/arrival_date=(\d{4}-\d{2}-\d{2})/(\d{8}T\d{6}Z)-([a-z0-9-]+)-(\d{6})"
    r"\.parquet$")


def test_layout_and_ordering(dirty_run):
    result = dirty_run.result
    org_ids = {o["org_id"] for o in dirty_run.fleet["organizations"]}
    paths = sorted(result.landing_dir.rglob("*.parquet"))
    assert sorted(result.files) == paths
    arrivals = []
    per_org_hour = Counter()
    for path in paths:
        m = NAME.match(str(path.relative_to(result.landing_dir)))
        assert m, path
        prefix, part, stamp, org, _ = m.groups()
        assert org in org_ids and prefix == org
        arrived = pq.read_table(path, columns=["arrived_at"]).column(0)[0].as_py()
        assert arrived.strftime("%Y%m%dT%H%M%SZ") == stamp
        assert arrived.strftime("%Y-%m-%d") == part
        ids = set(pq.read_table(path, columns=["compressor_id"]).column(0).to_pylist())
        assert {i[:5] for i in ids if i} <= {"COMP-", "TEST-"}
        arrivals.append((path.name, arrived))
        per_org_hour[(org, arrived.replace(minute=0, second=0))] += 1
    # name order is arrival order (across the organizations' prefixes)
    by_name = [a for _, a in sorted(arrivals)]
    assert by_name == sorted(by_name)
    batches = 24 * 4 * len(org_ids)
    late = dirty_run.truth.defects["late_batches"]
    assert len(paths) <= batches + late
    assert max(per_org_hour.values()) <= 3


def test_fleet_and_ground_truth_files(dirty_run):
    out = dirty_run.result.out
    fleet = Fleet.model_validate_json((out / "fleet.json").read_text())
    assert len(fleet.compressors) == 200
    truth = GroundTruth.model_validate_json((out / "ground_truth.json").read_text())
    assert truth == dirty_run.truth
    raw = json.loads((out / "ground_truth.json").read_text())
    assert raw["config"]["seed"] == 7 and "out" not in raw["config"]
    for f in raw["faults"]:
        assert f["onset"].endswith("Z") and f["compressor_id"].startswith("COMP-")
        assert set(f) >= {"org_id", "mode", "onset", "failure", "stage", "channels"}
    ops = truth.operations
    assert ops.planned_shutdowns > 0 and ops.cycling_stops > 0 and ops.start_stop_spikes > 0


def test_shutdowns_show_in_data(clean_run):
    t = clean_run.table
    speed = {}
    for cid, ts, s in zip(t.column("compressor_id").to_pylist(), t.column("ts").to_pylist(),
                          t.column("speed_rpm").to_pylist(), strict=True):
        speed[(cid, ts)] = s
    planned = [s for s in clean_run.truth.shutdowns if s.kind != "failure"]
    assert planned
    for s in planned[:100]:
        assert speed[(s.compressor_id, s.start)] == 0.0
        assert speed.get((s.compressor_id, s.end - timedelta(minutes=10)), 0.0) == 0.0
        after = speed.get((s.compressor_id, s.end))
        assert after is None or after > 0


def test_refuses_to_mix_runs(tmp_path):
    simulate(SimulationConfig(compressors=5, days=1, out=tmp_path))
    with pytest.raises(InputError, match="already holds a simulation"):
        simulate(SimulationConfig(compressors=5, days=1, out=tmp_path))
    again = simulate(SimulationConfig(compressors=5, days=1, out=tmp_path, seed=4,
                                      overwrite=True))
    assert sorted(again.landing_dir.rglob("*.parquet")) == sorted(again.files)


def test_start_is_utc_on_the_grid(tmp_path):
    cfg = SimulationConfig(compressors=1, days=1, out=tmp_path, start=datetime(2026, 3, 1, 7, 14))
    assert cfg.start.isoformat() == "2026-03-01T07:10:00+00:00"
