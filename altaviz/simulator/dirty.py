"""Field-telemetry defects injected into one landing file's rows, counted exactly.

Row-level defects (duplicate, out of range, null, unknown compressor, wrong type) are drawn
as mutually exclusive categories per row, so each defective row is counted once and the
ground truth equals what a reader finds in the files. Duplicates are copies of clean rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import CHANNELS, LANDING_SCHEMA, TEXT_LANDING_SCHEMA
from altaviz.simulator.config import DirtyConfig

REQUIRED_CHANNELS = tuple(c.name for c in CHANNELS if c.group == "frame")
#: Values a broken sensor or gateway sends: outside every channel's plausibility range.
BAD_VALUES = np.array([-9999.0, -32768.0, 65535.0, 99999.0, 1.0e9])
UNPARSEABLE = ("#VALUE!", "n/a", "ERR", "--")
_TS_TYPE = pa.timestamp("us", tz="UTC")


@dataclass
class DefectCounts:
    """Defects as injected (and as found in the files)."""

    missing_readings: int = 0
    comm_gaps: int = 0
    comm_gap_readings: int = 0
    late_batches: int = 0
    late_rows: int = 0
    duplicate_rows: int = 0
    out_of_range_values: int = 0
    out_of_range_rows: int = 0
    null_rows: int = 0
    null_key_rows: int = 0
    wrong_type_files: int = 0
    wrong_type_rows: int = 0
    unknown_compressor_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        """Plain dict for the ground truth file."""
        return asdict(self)


@dataclass
class Rows:
    """The rows of one landing file before encoding: unit index, timestamp, channel values."""

    unit: np.ndarray                 # int64 index into the id pool
    ts_us: np.ndarray                # int64 microseconds since the epoch (UTC)
    values: dict[str, np.ndarray]    # channel -> float64, NaN = null

    def select(self, mask: np.ndarray) -> Rows:
        """The subset of rows where ``mask`` is true."""
        return Rows(self.unit[mask], self.ts_us[mask], {k: a[mask] for k, a in self.values.items()})

    def __len__(self) -> int:
        return int(self.unit.size)


class IdPool:
    """Compressor ids of the fleet followed by ids that are not in it."""

    def __init__(self, ids: tuple[str, ...]) -> None:
        n = len(ids)
        self.unknown = [f"COMP-{n + 1 + j:04d}" for j in range(20)] + ["COMP-0000", "TEST-RIG-1"]
        self.n = n
        self.array = pa.array([*ids, *self.unknown], type=pa.string())


def _reported(values: dict[str, np.ndarray], row: int) -> tuple[str, ...]:
    """Required channels with a value in ``row``: a defect lands on a reported value, so a
    reader can tell it from a channel the field left null (a dropout, a missing instrument)."""
    present = tuple(c for c in REQUIRED_CHANNELS if not np.isnan(values[c][row]))
    return present or REQUIRED_CHANNELS


def encode(rows: Rows, arrived_us: int, pool: IdPool, dirt: DirtyConfig, text: bool,
           rng: np.random.Generator, counts: DefectCounts) -> pa.Table:
    """Inject row defects into ``rows`` and build the Arrow table of one landing file."""
    m = len(rows)
    values = {k: a.copy() for k, a in rows.values.items()}
    unit = rows.unit.copy()
    draw = rng.random(m)
    edges = np.cumsum([dirt.duplicate_rate, dirt.out_of_range_rate, dirt.null_rate,
                       dirt.unknown_compressor_rate, dirt.wrong_type_rate if text else 0.0])
    category = np.searchsorted(edges, draw, side="right")  # 0 dup .. 4 wrong type, 5 clean
    id_null = np.zeros(m, dtype=bool)
    ts_null = np.zeros(m, dtype=bool)

    oor = np.flatnonzero(category == 1)
    for r in oor:
        reported = _reported(values, int(r))
        picks = rng.choice(len(reported), size=min(len(reported),
                                                   1 + int(rng.random() < 0.3)),
                           replace=False)
        for ch in picks:
            values[reported[ch]][r] = BAD_VALUES[rng.integers(BAD_VALUES.size)]
        counts.out_of_range_values += picks.size
    counts.out_of_range_rows += oor.size

    nulls = np.flatnonzero(category == 2)
    for r in nulls:
        x = rng.random()
        if x < 0.1:
            id_null[r] = True
            counts.null_key_rows += 1
        elif x < 0.2:
            ts_null[r] = True
            counts.null_key_rows += 1
        else:
            reported = _reported(values, int(r))
            values[reported[rng.integers(len(reported))]][r] = np.nan
    counts.null_rows += nulls.size

    unknown = np.flatnonzero(category == 3)
    unit[unknown] = pool.n + rng.integers(0, len(pool.unknown), unknown.size)
    counts.unknown_compressor_rows += unknown.size

    wrong = np.flatnonzero(category == 4)
    wrong_cells = []
    for r in wrong:
        reported = _reported(values, int(r))
        wrong_cells.append((int(r), reported[rng.integers(len(reported))],
                            int(rng.integers(len(UNPARSEABLE) + 1))))
    counts.wrong_type_rows += wrong.size

    dup = category == 0
    counts.duplicate_rows += int(dup.sum())
    order = np.repeat(np.arange(m), 1 + dup.astype(np.int64))

    columns: list[pa.Array] = [
        pc.take(pool.array, pa.array(unit[order], mask=id_null[order])),
        pa.array(rows.ts_us[order], type=pa.int64(), mask=ts_null[order]).cast(_TS_TYPE),
        pa.array(np.full(order.size, arrived_us, dtype=np.int64)).cast(_TS_TYPE),
    ]
    if not text:
        columns += [pa.array(values[c.name][order], from_pandas=True) for c in CHANNELS]
        return pa.Table.from_arrays(columns, schema=LANDING_SCHEMA)
    counts.wrong_type_files += 1
    by_cell: dict[str, list[tuple[int, int]]] = {}
    for row, name, kind in wrong_cells:
        by_cell.setdefault(name, []).append((row, kind))
    position = np.cumsum(1 + dup.astype(np.int64)) - 1 - dup.astype(np.int64)  # row -> out idx
    for c in CHANNELS:
        arr = values[c.name]
        text_col = pc.cast(pa.array(arr[order], from_pandas=True), pa.string())
        if c.name in by_cell:
            objs = text_col.to_numpy(zero_copy_only=False).copy()
            for row, kind in by_cell[c.name]:
                objs[position[row]] = (f"{arr[row]:.1f}".replace(".", ",")
                                       if kind == len(UNPARSEABLE) else UNPARSEABLE[kind])
            text_col = pa.array(objs, type=pa.string())
        columns.append(text_col)
    return pa.Table.from_arrays(columns, schema=TEXT_LANDING_SCHEMA)
