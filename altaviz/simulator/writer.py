"""Landing-file naming and writing.

Files are ``landing/arrival_date=YYYY-MM-DD/YYYYMMDDTHHMMSSZ-<org>-<seq>.parquet``: the
partition and the name both start with the arrival time, so sorting paths sorts arrivals and
an incremental loader can take "every file after the last one I loaded".
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class LandingWriter:
    """Writes landing files under one landing folder and remembers what it wrote."""

    def __init__(self, landing: Path) -> None:
        self.landing = landing
        self.paths: list[Path] = []
        self.rows = 0
        self._seq = 0

    def write(self, table: pa.Table, arrived: datetime, org_id: str) -> Path:
        """Write one batch file; ``arrived`` is its (UTC) arrival time."""
        self._seq += 1
        folder = self.landing / f"arrival_date={arrived:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{arrived:%Y%m%dT%H%M%SZ}-{org_id}-{self._seq:06d}.parquet"
        pq.write_table(table, path, compression="snappy")
        self.paths.append(path)
        self.rows += table.num_rows
        return path
