"""Landing-file naming and writing.

Files are ``landing/<org>/arrival_date=YYYY-MM-DD/YYYYMMDDTHHMMSSZ-<org>-<seq>.parquet``:
each organization's gateways write under its own prefix, which is what the ETL attributes
their readings to; the partition and the name both start with the arrival time, so sorting
names sorts arrivals and an incremental loader can take "every file after the last one I
loaded".

Parquet encoding releases the GIL, so files are written on a small thread pool while the
next hour is generated; at most a few tables wait in memory, and every file's bytes depend
only on its table, so output stays deterministic.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

_MAX_PENDING = 8


class LandingWriter:
    """Writes landing files under one landing folder and remembers what it wrote.

    Use as a context manager: leaving it waits for every file and re-raises a write error.
    """

    def __init__(self, landing: Path, threads: int = 2) -> None:
        self.landing = landing
        self.paths: list[Path] = []
        self.rows = 0
        self._seq = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="landing")
        self._pending: deque[Future[None]] = deque()

    def write(self, table: pa.Table, arrived: datetime, org_id: str) -> Path:
        """Queue one batch file for writing; ``arrived`` is its (UTC) arrival time."""
        self._seq += 1
        folder = self.landing / org_id / f"arrival_date={arrived:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{arrived:%Y%m%dT%H%M%SZ}-{org_id}-{self._seq:06d}.parquet"
        while len(self._pending) >= _MAX_PENDING:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(pq.write_table, table, path,
                                               compression="snappy"))
        self.paths.append(path)
        self.rows += table.num_rows
        return path

    def close(self) -> None:
        """Wait for every queued file; raises the first write error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LandingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
