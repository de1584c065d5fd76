"""What the stages of one in-process run hand each other in memory (the hourly run).

The aggregates stage reads back from Delta what gold has just written (its rows, to pivot
them into PostgreSQL's compressor-hour rows) and from silver the latest reading of each
compressor (for the watermarks). In the hourly run gold and silver ran in the same process a
moment before and had those rows in hand: reading them back (with the scans that decide what
to read) would be a sizeable share of the hourly run (bench/bench_etl.py, hour phase), in the
part of the run where the aggregates' COPY and the quality checks already compete for the
cores.

A :class:`Carried` value says which lake and which batches (``after < batch <= upto``) it
holds, and a stage takes it only when those are exactly the batches it is about to process:
the other stage's own mark, read from the lake or PostgreSQL as always, decides. Anything else
(a stage run on its own, a stage run by another ETL worker, a retry after a crash, another
writer's batches in between) finds nothing that fits and reads the lake. Nothing here is
persistent: a crash loses it and costs only the read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

#: Gold rows up to which an in-process gold stage keeps a copy of what it wrote for the
#: aggregates stage (an hour of 4,500 units is ~108,000 rows, ~25 MB). Larger runs (a
#: backfill) read gold back, so a bulk load holds no second copy of its rows.
MAX_GOLD_ROWS = 400_000


@dataclass(frozen=True)
class Carried:
    """Rows a stage wrote for batches ``after < batch <= upto`` of the lake at ``lake``."""

    lake: Path
    after: int
    upto: int
    table: pa.Table

    def fits(self, lake: Path, after: int, upto: int) -> bool:
        """Whether these are exactly the batches ``after < batch <= upto`` of ``lake``."""
        return (self.lake.resolve(), self.after, self.upto) == (lake.resolve(), after, upto)


@dataclass
class Carry:
    """The run's carried rows; each is taken (and forgotten) by the stage that uses it.

    * ``gold``: every gold row the gold stage wrote, when all of them were new rows (no gold
      row existed in their compressor-hours before: each compressor-hour's rows are then all
      of its rows), in :data:`etl.lake.GOLD_SCHEMA`.
    * ``latest``: the latest reading per compressor of the silver batches silver wrote
      (``org_id``, ``compressor_id``, ``ts``).
    """

    gold: Carried | None = None
    latest: Carried | None = None

    def take_gold(self, lake: Path, after: int, upto: int) -> pa.Table | None:
        """Gold's rows if they are exactly those batches' (forgotten either way)."""
        carried, self.gold = self.gold, None
        return _if_fits(carried, lake, after, upto)

    def take_latest(self, lake: Path, after: int, upto: int) -> pa.Table | None:
        """Silver's latest readings if they are exactly those batches' (forgotten either
        way)."""
        carried, self.latest = self.latest, None
        return _if_fits(carried, lake, after, upto)


def _if_fits(carried: Carried | None, lake: Path, after: int, upto: int) -> pa.Table | None:
    return carried.table if carried is not None and carried.fits(lake, after, upto) else None
