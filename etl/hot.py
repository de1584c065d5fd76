"""The hot partials: gold's hourly partials of the most recent hours, one row per compressor-hour.

Why it exists: every hourly run needs the fleet's previous 24 hours of partials twice, for
silver's trailing outlier baselines and for gold's 4 h / 24 h windows. In gold they are long
rows, one per metric with text keys: about 2.2 million rows for 4,500 compressors, read from
whole date partitions and joined on ``(compressor_id, metric)``, which would be most of the
hourly run's time. Here the same numbers are wide (``n_i, s_i, q_i, lo_i, hi_i`` per metric
``i``, as :func:`etl.metrics.partial_aggregates` names them): about 108,000 rows for 24 hours,
one small Arrow IPC file per hour under ``<lake>/_hot/``, memory-mapped when read: mapping an
IPC file costs next to nothing, where decoding Parquet's many column chunks or materializing
the rows in DuckDB would be most of the hourly run's gold stage (bench/bench_etl.py, hour
phase).

Gold stays the only source of truth; this is a cache with a proof of freshness. ``meta.json``
records the cache's format, the gold batch mark the files were written for and the hours they
cover
(``first .. last``): for every covered hour the hour's file holds exactly gold's partials (no
file: gold has no row in that hour), and gold has no row after ``last``. Readers use the cache
only when its mark equals gold's current mark and it covers the hours they need; anything
else (a day-late batch, a run that crashed between gold's commit and the cache update, a lake
written by an older version) takes the gold path, and the next gold run rebuilds the cache
from gold. All writes happen under the lake's writer lock, after gold's commit, with files and
``meta.json`` replaced atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.telemetry import METRICS
from etl.lake import Lake
from etl.ledger import dates_between, sql_dates
from etl.thresholds import DEFAULT_THRESHOLDS
from etl.windows import unit_keys

#: ``(prefix, type)`` of the wide partial columns, per metric index ``i``. Outlier and late
#: counts are not kept: windows never combine them (each row carries its own).
_PARTS = (("n", pa.int64()), ("s", pa.float64()), ("q", pa.float64()), ("lo", pa.float64()),
          ("hi", pa.float64()))
#: The files' format, recorded in ``meta.json``: a cache in any other format (the Parquet
#: files of earlier versions, the 24-metric files from before the stage pressures were
#: aggregated) is stale, and the next gold run rebuilds it.
FORMAT = "arrow-ipc-2"
#: The columns of every file, in this order and with these types.
SCHEMA = pa.schema([
    pa.field("org_id", pa.string()), pa.field("compressor_id", pa.string()),
    pa.field("hour", pa.timestamp("us", tz="UTC")),
    *(pa.field(f"{p}_{i}", t) for i in range(len(METRICS)) for p, t in _PARTS)])
#: The hour files' suffix.
SUFFIX = ".arrow"


def _cached_columns(source: str) -> str:
    """SQL of the cache's columns from DuckDB relation ``source`` (:func:`_conform` types
    them)."""
    return f"SELECT {', '.join(SCHEMA.names)} FROM {source}"


@dataclass(frozen=True)
class Meta:
    """What the cache holds: valid for gold batch ``mark``, hours ``first .. last``."""

    mark: int
    first: datetime
    last: datetime


class HotPartials:
    """The cache of one lake (``<lake>/_hot``), keeping ``hours`` hours (``last - hours + 1
    .. last``, :attr:`etl.thresholds.Thresholds.hot_hours`; 0: no cache)."""

    def __init__(self, lake_root: Path, hours: int = DEFAULT_THRESHOLDS.hot_hours) -> None:
        self.root = lake_root / "_hot"
        self.hours = hours

    def _file(self, hour: datetime) -> Path:
        return self.root / f"hour-{hour:%Y-%m-%dT%H}{SUFFIX}"

    def meta(self) -> Meta | None:
        """The recorded state, or None (no cache, unreadable, or another format: stale)."""
        try:
            raw = json.loads((self.root / "meta.json").read_text())
            if raw.get("format") != FORMAT:
                return None
            return Meta(int(raw["mark"]), datetime.fromisoformat(raw["first"]),
                        datetime.fromisoformat(raw["last"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def enabled(self) -> bool:
        """False when the cache keeps no hours."""
        return self.hours > 0

    def usable(self, gold_mark: int, first: datetime) -> Meta | None:
        """The meta when the cache is valid for ``gold_mark`` and covers every hour from
        ``first`` on (gold has no row after ``last``), else None."""
        meta = self.meta()
        if self.hours <= 0 or meta is None or meta.mark != gold_mark or first < meta.first:
            return None
        return meta

    def table(self, meta: Meta, first: datetime, last: datetime) -> pa.Table:
        """The cached rows with ``first <= hour <= last`` (:data:`SCHEMA`), memory-mapped."""
        files = [self._file(h) for h in _hours(max(first, meta.first), min(last, meta.last))]
        parts = [read_ipc(f) for f in files if f.exists()]
        return pa.concat_tables(parts) if parts else SCHEMA.empty_table()

    def relation(self, con: duckdb.DuckDBPyConnection, meta: Meta, first: datetime,
                 last: datetime) -> str:
        """Name of a relation on ``con`` holding the cached rows with ``first <= hour <=
        last``, without the minimum and maximum columns (what the outlier baselines read):
        an Arrow table registered as ``hot_cached``. DuckDB converts every column it scans,
        so the 48 it never reads are left out."""
        return self.register(con, self.table(meta, first, last))

    @staticmethod
    def register(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> str:
        """:meth:`relation` of rows read by :meth:`table`."""
        keep = [f.name for f in SCHEMA if not f.name.startswith(("lo_", "hi_"))]
        con.register("hot_cached", rows.select(keep))
        return "hot_cached"

    def start(self, before: int, last_dirty: datetime) -> Update:
        """Begin bringing the cache along with a gold run (before any file is touched).

        The recorded state is removed first: from here until :meth:`Update.finish` the files
        may hold partials gold has not committed, and a crash in between must leave a cache
        that no reader trusts. ``before`` is gold's mark before the run, ``last_dirty`` the
        latest hour the run recomputes.
        """
        meta = self.meta()
        if meta is None and before == 0 and self.hours > 0:
            # a new lake: gold is empty, so is the cache
            empty = last_dirty - timedelta(hours=self.hours)
            meta = Meta(0, empty, empty)
        self.invalidate()
        valid = meta is not None and meta.mark == before and self.hours > 0
        return Update(self, meta if valid else None, last_dirty)

    def advance(self, before: int, after: int) -> None:
        """Gold committed batches that changed no row: a cache valid before still is."""
        meta = self.meta()
        if meta is not None and meta.mark == before:
            self._finish(Meta(after, meta.first, meta.last))

    def rebuild(self, con: duckdb.DuckDBPyConnection, lake: Lake, after: int) -> None:
        """Write every covered hour's file from gold (after a crash or on a lake written
        before the cache existed). One join per metric: pivoting gold's long rows with one
        filtered aggregate per metric and partial is several times slower."""
        # every hour file, in this format or an earlier one
        for stale in self.root.glob("hour-*.*"):
            stale.unlink()
        self.invalidate()
        if self.hours <= 0:
            return
        last = lake.max_value("gold", "hour")
        if last is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        first = last - timedelta(hours=self.hours - 1)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE hot_long AS
            SELECT org_id, compressor_id, metric, hour, n, sum, sumsq, min, max
            FROM delta_scan('{lake.uri("gold")}')
            WHERE date IN ({sql_dates(dates_between(first, last))})
              AND hour >= '{first.isoformat()}'::TIMESTAMPTZ
        """)
        cols = ", ".join(
            f"coalesce(m{i}.n, 0) AS n_{i}, m{i}.sum AS s_{i}, m{i}.sumsq AS q_{i}, "
            f"m{i}.min AS lo_{i}, m{i}.max AS hi_{i}" for i in range(len(METRICS)))
        joins = " ".join(
            f"LEFT JOIN (SELECT * FROM hot_long WHERE metric = '{m.name}') m{i} "
            f"USING (org_id, compressor_id, hour)" for i, m in enumerate(METRICS))
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE hot_rebuild AS
            SELECT k.org_id, k.compressor_id, k.hour, {cols}
            FROM (SELECT DISTINCT org_id, compressor_id, hour FROM hot_long) k {joins}
        """)
        con.execute("DROP TABLE hot_long")
        rows = _conform(con.execute(_cached_columns("hot_rebuild")).to_arrow_table())
        con.execute("DROP TABLE hot_rebuild")
        for hour, part in _by_hour(rows):
            _write(part, self._file(hour))
        self._finish(Meta(after, first, last))

    def _finish(self, meta: Meta) -> None:
        """Drop hours that left the window and record the new state (atomically)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.glob(f"hour-*{SUFFIX}"):
            hour = datetime.strptime(path.stem, "hour-%Y-%m-%dT%H").replace(
                tzinfo=meta.last.tzinfo)
            if hour < meta.first:
                path.unlink()
        tmp = self.root / "meta.json.tmp"
        tmp.write_text(json.dumps({"format": FORMAT, "mark": meta.mark,
                                   "first": meta.first.isoformat(),
                                   "last": meta.last.isoformat()}))
        os.replace(tmp, self.root / "meta.json")

    def invalidate(self) -> None:
        """Forget the state (the files are rewritten by the next rebuild)."""
        (self.root / "meta.json").unlink(missing_ok=True)


def read_ipc(path: Path) -> pa.Table:
    """One hour's file, memory-mapped (the mapping outlives a later replacement of the file:
    writers replace files, never change them in place)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _write(rows: pa.Table, path: Path) -> None:
    """Replace ``path`` atomically with ``rows`` sorted by organization and compressor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rows = rows.sort_by([("org_id", "ascending"), ("compressor_id", "ascending")])
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        writer.write_table(rows)
    os.replace(tmp, path)


def _conform(rows: pa.Table) -> pa.Table:
    """``rows`` (from :func:`_cached_columns`) with exactly :data:`SCHEMA`'s types."""
    return rows.select(SCHEMA.names).cast(SCHEMA)


def _by_hour(rows: pa.Table) -> list[tuple[datetime, pa.Table]]:
    """``rows`` split by hour."""
    hours = pc.unique(rows.column("hour")).to_pylist()
    return [(h, rows.filter(pc.equal(rows.column("hour"), pa.scalar(h, SCHEMA.field("hour").type))))
            for h in sorted(hours)]


def _hours(first: datetime, last: datetime) -> list[datetime]:
    out: list[datetime] = []
    h = first
    while h <= last:
        out.append(h)
        h += timedelta(hours=1)
    return out


class Update:
    """One gold run's changes to the cache: :meth:`stage` each bucket's fresh partials, then
    :meth:`finish` after gold's commit."""

    def __init__(self, hot: HotPartials, meta: Meta | None, last_dirty: datetime) -> None:
        self.hot, self.meta = hot, meta
        if meta is not None:
            self.last = max(meta.last, last_dirty)
            self.first = max(meta.first, self.last - timedelta(hours=hot.hours - 1))

    def stage(self, con: duckdb.DuckDBPyConnection, fresh: str | pa.Table) -> None:
        """Put the recomputed compressor-hours of ``fresh`` (a DuckDB table or an Arrow
        table: ``org_id, compressor_id, hour`` and the wide partial columns, complete for
        each of its compressor-hours) into the files of their hours."""
        if self.meta is None:
            return
        if isinstance(fresh, str):
            rows = _conform(con.execute(f"""
                SELECT * FROM ({_cached_columns(fresh)})
                WHERE hour >= '{self.first.isoformat()}'::TIMESTAMPTZ""").to_arrow_table())
        else:
            hour = SCHEMA.field("hour").type
            rows = _conform(fresh.filter(pc.greater_equal(
                fresh.column("hour").cast(hour), pa.scalar(self.first, hour))))
        for hour, new in _by_hour(rows):
            path = self.hot._file(hour)
            if path.exists():
                # the hour's other compressors (of every organization) stay as they were
                old = read_ipc(path)
                kept = old.filter(pc.invert(pc.is_in(unit_keys(old), value_set=unit_keys(new))))
                new = pa.concat_tables([new, kept])
            _write(new, path)

    def finish(self, con: duckdb.DuckDBPyConnection, lake: Lake, after: int) -> None:
        """Record the cache as valid for gold's new mark ``after`` (or rebuild it from gold
        when it was not valid at the start)."""
        if self.meta is None:
            self.hot.rebuild(con, lake, after)
        else:
            self.hot._finish(Meta(after, self.first, self.last))
