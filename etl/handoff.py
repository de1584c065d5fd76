"""Silver's hourly partials of a batch, handed to gold so that gold need not rebuild them.

Why it exists: gold's windows are built from hourly partials (n, sum, sum of squares, min,
max, outlier and late counts per metric and compressor-hour), which it would otherwise
compute by reading every silver reading of the hours it recomputes. In a bulk load (a first
load, a catch-up of new days) silver has just grouped the very same readings by
compressor-hour for its outlier baselines (:func:`etl.silver._baseline_by_window`, on the
hour grid), so gold's re-read would repeat that work, a large share of gold's time; the
hourly run's silver groups its batch too (:func:`etl.silver._baseline_by_join`, joined to
the hot cache). So silver keeps those partials, with min and max added, and counts the flags
as it writes its rows; gold takes them from here (bench/bench_etl.py times gold in both
phases).

What the files hold, under ``<lake>/_handoff/``:

* ``sums.arrow``: one row per compressor-hour in which the silver batches ``lo < batch <=
  hi`` kept a reading (:data:`SUMS_SCHEMA`: ``org_id, compressor_id, hour``, silver's grid
  cell (-1 off the grid), and ``n_i, s_i, q_i`` per metric ``i``), as silver's baseline
  aggregation gives them;
* ``extremes.arrow``: ``lo_i, hi_i`` (minimum and maximum) of the same rows in the same
  order, taken by silver as its rows stream to Delta;
* ``flags.arrow``: the compressor-hours (``org_id, compressor_id, hour``) with an outlier or
  a late reading, with ``o_i`` and ``l_i`` (:func:`etl.metrics.flag_aggregates`'s counts);
* ``meta.json``: the format and ``lo``, ``hi``, written last, after silver's commit.

When gold may use them (:meth:`Handoff.usable`): its own pending batches are exactly ``lo <
batch <= hi`` and no gold row lies in the hours it recomputes (gold's ``fresh_only``). Every
silver reading of those hours then came with those batches, so the handed partials are the
hours' complete partials, which is what gold would compute from silver. Anything else (a run
that stopped between silver and gold, batches silver wrote in two runs, late data for hours
gold holds) takes gold's silver path. Silver removes the files before it starts and gold
after it has used or passed them over, so they live only between the two stages (a week of
4,500 compressors: about 760 MB). They are only a shortcut: when silver cannot write them
(a full disk) it logs a warning and gold reads silver.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS
from etl.hot import SCHEMA as PARTIALS_SCHEMA
from etl.hot import read_ipc
from etl.lake import TS
from etl.metrics import HOUR_US
from etl.windows import unit_keys

#: The files' format, recorded in ``meta.json`` (another format is never used).
FORMAT = "silver-partials-3"
#: The sums' columns.
SUMS_SCHEMA = pa.schema([
    pa.field("org_id", pa.string()), pa.field("compressor_id", pa.string()),
    pa.field("hour", TS), pa.field("pos", pa.int64()),
    *(pa.field(f"{p}_{i}", t) for i in range(len(METRICS))
      for p, t in (("n", pa.int64()), ("s", pa.float64()), ("q", pa.float64())))])
#: The extremes' columns.
EXTREMES_SCHEMA = pa.schema([pa.field(f"{p}_{i}", pa.float64())
                             for i in range(len(METRICS)) for p in ("lo", "hi")])
#: What to do about a damaged set (the error's last words).
REMEDY = "remove the lake's _handoff folder (gold then reads silver)"
#: The flag counts' columns.
FLAGS_SCHEMA = pa.schema([
    pa.field("org_id", pa.string()), pa.field("compressor_id", pa.string()),
    pa.field("hour", TS),
    *(pa.field(f"{p}_{i}", pa.int64()) for i in range(len(METRICS)) for p in ("o", "l"))])


class Handoff:
    """The handed partials of one lake (``<lake>/_handoff``)."""

    def __init__(self, lake_root: Path) -> None:
        self.root = lake_root / "_handoff"
        #: the record batches' lengths of the sums this object wrote (the extremes are
        #: written in the same batches, so that a reader can take both a batch at a time)
        self._lengths: list[int] = []
        self._flags: pa.Table | None = None

    def discard(self) -> None:
        """Remove whatever is there (the record first, so no reader trusts a half-removed
        set)."""
        if self.root.is_dir():
            (self.root / "meta.json").unlink(missing_ok=True)
            shutil.rmtree(self.root, ignore_errors=True)

    def write_sums(self, reader: pa.RecordBatchReader) -> np.ndarray:
        """Write ``sums.arrow`` from ``reader`` (the columns of :data:`SUMS_SCHEMA`, cast
        to its types as they stream); returns the rows' ``pos``, in the file's order."""
        self.root.mkdir(parents=True, exist_ok=True)
        cells: list[np.ndarray] = []
        with pa.OSFile(str(self.root / "sums.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, SUMS_SCHEMA) as writer:
            for batch in reader:
                batch = pa.RecordBatch.from_arrays(
                    [batch.column(f.name).cast(f.type) for f in SUMS_SCHEMA], schema=SUMS_SCHEMA)
                cells.append(batch.column("pos").to_numpy())
                self._lengths.append(batch.num_rows)
                writer.write_batch(batch)
        return np.concatenate(cells) if cells else np.empty(0, dtype=np.int64)

    def commit(self, lo_values: np.ndarray, hi_values: np.ndarray, flags: pa.Table,
               lo: int, hi: int) -> None:
        """Write the extremes (metrics x rows of the sums: the minimum, the maximum, or
        +inf / -inf where the row has no value of the metric) and the flag counts, and
        record the set as silver's batches ``lo < batch <= hi`` (after silver's commit: a
        crash before this leaves no record, and gold reads silver)."""
        with pa.OSFile(str(self.root / "extremes.arrow"), "wb") as sink, \
                pa.ipc.new_file(sink, EXTREMES_SCHEMA) as writer:
            start = 0
            for length in self._lengths:
                part = slice(start, start + length)
                start += length
                columns = []
                for i in range(len(METRICS)):
                    for values in (lo_values[i, part], hi_values[i, part]):
                        columns.append(pa.array(values, pa.float64(), mask=np.isinf(values)))
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=EXTREMES_SCHEMA))
        _write(flags.select(FLAGS_SCHEMA.names).cast(FLAGS_SCHEMA), self.root / "flags.arrow")
        tmp = self.root / "meta.json.tmp"
        tmp.write_text(json.dumps({"format": FORMAT, "lo": lo, "hi": hi}))
        os.replace(tmp, self.root / "meta.json")

    def usable(self, lo: int, hi: int) -> bool:
        """True when the recorded set is silver's batches ``lo < batch <= hi`` exactly (the
        caller checks that gold holds no row of the hours it recomputes)."""
        try:
            raw = json.loads((self.root / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return (isinstance(raw, dict) and raw.get("format") == FORMAT
                and raw.get("lo") == lo and raw.get("hi") == hi)

    def partials(self, units: pa.Array | None = None) -> pa.Table:
        """The handed partials (:data:`PARTIALS_SCHEMA`) of ``units`` (default: all), the
        compressors' :func:`etl.windows.unit_keys`.

        Read a record batch at a time, not memory-mapped: gold takes a bucket of compressors
        at a time, and a mapping of the whole set (about 750 MB for a week of 4,500
        compressors) would stay resident on top of gold's own memory."""
        parts: list[pa.Table] = []
        mismatch = f"{self.root}: the sums and the extremes do not match; {REMEDY}"
        with pa.OSFile(str(self.root / "sums.arrow")) as s_file, \
                pa.OSFile(str(self.root / "extremes.arrow")) as e_file:
            sums, extremes = pa.ipc.open_file(s_file), pa.ipc.open_file(e_file)
            if sums.num_record_batches != extremes.num_record_batches:
                raise RuntimeError(mismatch)
            for i in range(sums.num_record_batches):
                s, e = sums.get_batch(i), extremes.get_batch(i)
                if s.num_rows != e.num_rows:
                    raise RuntimeError(mismatch)
                if units is not None:
                    keep = pc.is_in(unit_keys(s), value_set=units)
                    s, e = s.filter(keep), e.filter(keep)
                parts.append(pa.Table.from_arrays(
                    [(s if f.name in SUMS_SCHEMA.names else e).column(f.name)
                     for f in PARTIALS_SCHEMA], schema=PARTIALS_SCHEMA))
        return pa.concat_tables(parts) if parts else PARTIALS_SCHEMA.empty_table()

    def flags(self) -> pa.Table:
        """The flag counts (compressor-hours with none are absent), read once."""
        if self._flags is None:
            self._flags = read_ipc(self.root / "flags.arrow")
        return self._flags


def _write(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


class FlagTally:
    """Outlier and late counts per compressor-hour and metric, gathered from silver's rows
    as they stream to Delta. Only rows with a flag are kept (a small share of readings)."""

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []

    def add(self, batch: pa.RecordBatch, outliers: np.ndarray) -> None:
        """Count ``batch``'s flagged rows (columns ``org_id, compressor_id, ts, late`` and
        the metric values ``m_i``; a late reading counts for each metric it has a value of).

        Args:
            batch: silver rows.
            outliers: rows x metrics, True where the metric's value is an outlier.
        """
        late = pc.fill_null(batch.column("late"), False).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(outliers.any(axis=1) | late)
        if len(rows) == 0:
            return
        take = pa.array(rows)
        ts = pc.cast(pc.cast(batch.column("ts").take(take), TS), pa.int64()).to_numpy()
        columns: dict[str, pa.Array] = {
            "org_id": batch.column("org_id").take(take).cast(pa.string()),
            "compressor_id": batch.column("compressor_id").take(take).cast(pa.string()),
            "hour": pa.array(ts // HOUR_US * HOUR_US, pa.int64()).cast(TS)}
        for i in range(len(METRICS)):
            present = pc.is_valid(batch.column(f"m_{i}").take(take)).to_numpy(
                zero_copy_only=False)
            columns[f"o_{i}"] = pa.array(outliers[rows, i].astype(np.int64))
            columns[f"l_{i}"] = pa.array((present & late[rows]).astype(np.int64))
        self._parts.append(pa.table(columns))

    def table(self) -> pa.Table:
        """The counts, one row per compressor-hour with a flag (:data:`FLAGS_SCHEMA`)."""
        if not self._parts:
            return FLAGS_SCHEMA.empty_table()
        rows = pa.concat_tables(self._parts)
        counts = [c for c in FLAGS_SCHEMA.names if c not in ("org_id", "compressor_id", "hour")]
        summed = rows.group_by(["org_id", "compressor_id", "hour"]).aggregate(
            [(c, "sum") for c in counts])
        return summed.rename_columns([n.removesuffix("_sum") for n in summed.column_names]
                                     ).select(FLAGS_SCHEMA.names).cast(FLAGS_SCHEMA)
