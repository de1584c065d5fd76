"""Hand-made landing files written with pyarrow exactly as the landing contract says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from altaviz.core.telemetry import CHANNELS, LANDING_SCHEMA, TEXT_LANDING_SCHEMA

T0 = datetime(2025, 3, 10, 0, 0, tzinfo=UTC)

BASE = {
    "vibration_frame_mm_s": 3.0, "vibration_cylinder_mm_s": 5.0, "vibration_skid_mm_s": 1.0,
    "stage1_suction_psig": 50.0, "stage1_discharge_psig": 200.0, "stage1_discharge_temp_f": 250.0,
    "stage2_suction_psig": 195.0, "stage2_discharge_psig": 600.0,
    "stage2_discharge_temp_f": 260.0,
    "suction_temp_f": 80.0, "flow_mmscfd": 6.0, "speed_rpm": 1200.0, "oil_pressure_psig": 60.0,
    "oil_temp_f": 170.0, "oil_filter_dp_psid": 5.0, "bearing_temp_max_f": 180.0,
    "bearing_temp_min_f": 170.0, "ambient_temp_f": 70.0,
}


#: The channels of the hand-made readings, which the test fleet's units carry
#: (tests/conftest.py): two stages, no jacket water.
CARRIED = tuple(c.name for c in CHANNELS if c.name in BASE)


def reading(compressor_id: str | None, ts: datetime, **values: Any) -> dict[str, Any]:
    """A valid reading (every required channel, two stages) with ``values`` overriding."""
    row: dict[str, Any] = {"compressor_id": compressor_id, "ts": ts}
    for c in CHANNELS:
        row[c.name] = BASE.get(c.name)
    row.update(values)
    return row


#: A live transmitter's reading-to-reading wobble (exact binary fractions summing to zero over
#: an hour's six readings, so hourly means stay the nominal values exactly).
_WOBBLE = (-0.125, 0.125, -0.25, 0.25, 0.0, 0.0)


def live(step: int, **values: float | None) -> dict[str, float | None]:
    """Channel values as a live transmitter reports them: :data:`BASE` (with ``values``
    overriding; ``None`` and NaN stay as they are) wobbling a little around the value from
    reading to reading, so that no channel looks frozen to the stuck-sensor rules."""
    wobble = _WOBBLE[step % len(_WOBBLE)]
    return {name: v if v is None or v != v else v + wobble
            for name, v in {**BASE, **values}.items()}


def series(compressor_id: str, start: datetime, hours: int, *, wobble: bool = False,
           **values: Any) -> list[dict[str, Any]]:
    """Readings every 10 minutes for ``hours`` hours (with ``wobble``, as :func:`live`)."""
    return [reading(compressor_id, start + timedelta(minutes=10 * i),
                    **(live(i, **values) if wobble else values))
            for i in range(hours * 6)]


_seq = [0]


def write_landing(landing: Path, rows: list[dict[str, Any]], arrived_at: datetime,
                  org: str = "gw", text: bool = False) -> Path:
    """Write one landing file (one arrived_at for every row) and return its path."""
    _seq[0] += 1
    folder = landing / f"arrival_date={arrived_at.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{arrived_at.strftime('%Y%m%dT%H%M%S')}-{org}-{_seq[0]:06d}.parquet"
    schema = TEXT_LANDING_SCHEMA if text else LANDING_SCHEMA
    cols: dict[str, list[Any]] = {f.name: [] for f in schema}
    for r in rows:
        for f in schema:
            if f.name == "arrived_at":
                cols[f.name].append(arrived_at)
                continue
            v = r.get(f.name)
            if text and f.name not in ("compressor_id", "ts") and v is not None \
                    and not isinstance(v, str):
                v = repr(float(v))
            cols[f.name].append(v)
    table = pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()},
                     schema=schema)
    pq.write_table(table, path)
    return path
