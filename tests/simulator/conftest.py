"""Small simulated runs shared by the simulator tests (each generated once per session)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from altaviz.simulator import DirtyConfig, SimulationConfig, SimulationResult, simulate


@dataclass
class Run:
    result: SimulationResult
    table: pa.Table            # every landing row (text files cast to float, bad text -> null)
    fleet: dict

    @property
    def truth(self):
        return self.result.ground_truth


def read_landing(result: SimulationResult) -> pa.Table:
    """All landing files as one typed table; unparseable text values become null."""
    from altaviz.core.telemetry import LANDING_SCHEMA

    tables = []
    for path in sorted(result.landing_dir.rglob("*.parquet")):
        t = pq.read_table(path)
        if t.schema != LANDING_SCHEMA:
            import pyarrow.compute as pc

            cols = t.columns[:3]
            for field in list(LANDING_SCHEMA)[3:]:
                col = t.column(field.name)
                ok = pc.match_substring_regex(col, r"^-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?$")
                cols.append(pc.if_else(ok, col, None).cast(pa.float64()))
            t = pa.Table.from_arrays(cols, schema=LANDING_SCHEMA)
        tables.append(t)
    return pa.concat_tables(tables)


def field_nulls(truth) -> dict[str, list[tuple[str, object, object]]]:
    """compressor -> (channel, start, end) of every channel the field left null on purpose."""
    out: dict[str, list[tuple[str, object, object]]] = {}
    for e in truth.nuisance_events:
        if e.kind in ("sensor_dropout", "missing_channel"):
            out.setdefault(e.compressor_id, []).append((e.channel, e.start, e.end))
    return out


def excused(nulls, compressor_id, channel, ts) -> bool:
    """True when ``channel`` of ``compressor_id`` is null at ``ts`` by field behaviour."""
    return any(c == channel and s <= ts < e for c, s, e in nulls.get(compressor_id, ()))


def sensor_trouble(truth, compressor_id, channel, start, end,
                   kinds=("stuck_sensor", "sensor_dropout", "missing_channel")) -> bool:
    """True when a stuck, dropped or missing ``channel`` of the unit overlaps [start, end)."""
    return any(e.compressor_id == compressor_id and e.channel == channel
               and e.start < end and start < e.end
               for e in truth.nuisance_events if e.kind in kinds)


def _run(tmp: Path, **kwargs) -> Run:
    result = simulate(SimulationConfig(out=tmp, **kwargs))
    return Run(result, read_landing(result), json.loads(result.fleet_path.read_text()))


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Clean data, many faults: for ranges and fault signatures."""
    return _run(tmp_path_factory.mktemp("clean"), compressors=150, days=10, seed=11,
                dirty=None, fault_share=0.3, organizations=3)


@pytest.fixture(scope="session")
def calm_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The calm profile (no field behaviour): speed carries the load, flow stays flat."""
    return _run(tmp_path_factory.mktemp("calm"), compressors=100, days=8, seed=11,
                dirty=None, field=None, fault_share=0.3, organizations=3)


@pytest.fixture(scope="session")
def dirty_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Default fault share, raised defect rates so every defect occurs often enough to count."""
    dirt = DirtyConfig(missing_rate=0.01, comm_gaps_per_unit_day=0.1, late_batch_rate=0.1,
                       duplicate_rate=0.01, out_of_range_rate=0.005, null_rate=0.005,
                       text_file_rate=0.2, wrong_type_rate=0.05, unknown_compressor_rate=0.005)
    return _run(tmp_path_factory.mktemp("dirty"), compressors=200, days=4, seed=7, dirty=dirt,
                organizations=3)
