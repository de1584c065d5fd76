"""Which landing files are new: the loaded-files ledger.

The ledger *is* the bronze table: every bronze row carries its ``source_file`` and the
``arrival_date`` partition it came from, and a file's rows land in one atomic Delta commit.
A separate ledger (a PostgreSQL table or a second Delta table) would be a second commit that a
crash can separate from the data, loading a file twice or never; reading the ledger from the
data itself cannot disagree with it.

Reading it from bronze, though, means reading the ``source_file`` column of every bronze row of
every arrival date still in the landing folder, at every run: a cost that grows with the
folder's retention and is paid by every hourly run (bench/bench_etl.py, hour phase). So
bronze's files are also kept in an index (:data:`INDEX_FILE`): the
``(source_file, arrival_date)`` of every batch up to a mark, with the bronze table's id. Like
the hot partials (:mod:`etl.hot`) it is a cache with a proof: a lookup trusts it only for the
same table and a mark not past bronze's own, reads bronze only for the batches after it (one
run's, pruned by their statistics), and writes it forward. A missing, unreadable or stale
index (a restored bronze, another lake's file) is ignored and rebuilt from bronze; bronze stays
the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl.lake import Lake, app_id

log = logging.getLogger(__name__)

#: The index of bronze's loaded files, relative to the lake's root (see the module docstring).
INDEX_FILE = Path("_ledger") / "bronze_files.parquet"
_INDEX_SCHEMA = pa.schema([pa.field("source_file", pa.string()),
                           pa.field("arrival_date", pa.string())])

_ARRIVAL_DIR = re.compile(r"^arrival_date=(\d{4}-\d{2}-\d{2})$")
#: An organization's landing prefix: its ``org_id`` (letters, digits, ``_ . -``).
ORG_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class LandingFile:
    """One landing file: its absolute path, its path relative to the landing folder (the
    ledger key) and the arrival date of the folder it sits in."""

    path: Path
    source_file: str
    arrival_date: str


def discover(landing: Path) -> list[LandingFile]:
    """Every landing file in ``LANDING/<org_id>/arrival_date=YYYY-MM-DD/*.parquet`` (each
    organization's own prefix: the organization its readings are attributed to) and in the
    older flat ``LANDING/arrival_date=YYYY-MM-DD/*.parquet``, oldest first.

    File names start with a sortable arrival timestamp, so name order is arrival order.
    Files elsewhere in the folder do not follow the contract and are ignored.
    """
    if not landing.is_dir():
        return []
    # absolute, not resolved: a landing folder of symlinks keeps its own relative paths
    landing = landing.absolute()
    found: list[LandingFile] = []
    for top in landing.iterdir():
        if not top.is_dir():
            continue
        if _ARRIVAL_DIR.match(top.name):
            folders = [(top, top.name)]
        elif ORG_DIR.match(top.name):
            folders = [(f, f"{top.name}/{f.name}") for f in top.iterdir()
                       if _ARRIVAL_DIR.match(f.name) and f.is_dir()]
        else:
            continue
        for folder, key in folders:
            match = _ARRIVAL_DIR.match(folder.name)
            assert match is not None
            for path in folder.glob("*.parquet"):
                found.append(LandingFile(path, f"{key}/{path.name}", match.group(1)))
    found.sort(key=lambda f: (f.arrival_date, f.path.name, f.source_file))
    return found


def source_org_sql(source_file: str = "source_file") -> str:
    """SQL: the organization a bronze row came from (its landing prefix), NULL for a file of
    the flat layout."""
    return (f"CASE WHEN {source_file} NOT LIKE 'arrival_date=%' "
            f"THEN split_part({source_file}, '/', 1) END")


def loaded_files(con: duckdb.DuckDBPyConnection, lake: Lake,
                 arrival_dates: set[str]) -> set[str]:
    """The ``source_file`` keys already in bronze for the given arrival dates."""
    if not arrival_dates:
        return set()
    known = bronze_files(con, lake)
    wanted = pc.is_in(known.column("arrival_date"), value_set=pa.array(sorted(arrival_dates)))
    return set(known.filter(wanted).column("source_file").to_pylist())


def bronze_files(con: duckdb.DuckDBPyConnection, lake: Lake) -> pa.Table:
    """``source_file, arrival_date`` of every file bronze holds: the index, plus what bronze
    committed after the index's mark (written forward into the index when there was any)."""
    bronze = lake.table("bronze")
    table_id = str(bronze.metadata().id)
    mark = int(bronze.transaction_version(app_id("bronze")) or 0)
    indexed, upto = _read_index(lake.root / INDEX_FILE, table_id, mark)
    if upto == mark:
        return indexed
    newer = con.execute(
        f"SELECT DISTINCT source_file, arrival_date FROM delta_scan('{lake.uri('bronze')}') "
        f"WHERE batch_id > {int(upto)}").to_arrow_table().cast(_INDEX_SCHEMA)
    known = pa.concat_tables([indexed, newer])
    _write_index(lake.root / INDEX_FILE, known, table_id, mark)
    return known


def _read_index(path: Path, table_id: str, mark: int) -> tuple[pa.Table, int]:
    """The index's files and mark, if it is the index of bronze table ``table_id`` up to a
    mark no later than bronze's ``mark``; else no files and mark 0 (read bronze whole)."""
    nothing = (_INDEX_SCHEMA.empty_table(), 0)
    try:
        index = pq.read_table(path)
    except FileNotFoundError:
        return nothing
    except (OSError, pa.ArrowException) as exc:
        log.warning("ledger index %s is unreadable (%s); reading bronze instead", path, exc)
        return nothing
    meta = index.schema.metadata or {}
    try:
        indexed_id, upto = meta[b"table_id"].decode(), int(meta[b"mark"])
        files = index.select(_INDEX_SCHEMA.names).cast(_INDEX_SCHEMA)
    except (KeyError, ValueError, pa.ArrowException) as exc:
        log.warning("ledger index %s is malformed (%s); reading bronze instead", path, exc)
        return nothing
    if indexed_id != table_id or upto > mark:
        # another table (the lake was replaced) or a bronze rolled back past the index: files
        # the index lists may not be in bronze, and would never be loaded
        log.warning("ledger index %s is for bronze table %s up to batch %d, not table %s at "
                    "batch %d; reading bronze instead", path, indexed_id, upto, table_id, mark)
        return nothing
    return files, upto


def _write_index(path: Path, files: pa.Table, table_id: str, mark: int) -> None:
    """Replace the index atomically (a reader sees the old file or the new one, whole). A
    failure costs only the next run's speed: bronze stays the ledger."""
    meta = {b"table_id": table_id.encode(), b"mark": str(mark).encode()}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(files.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the ledger index %s: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def dates_between(first: datetime, last: datetime) -> set[str]:
    """The date partitions (``YYYY-MM-DD``) from ``first``'s day to ``last``'s, inclusive."""
    day, end, out = first.date(), last.date(), set()
    while day <= end:
        out.add(day.isoformat())
        day += timedelta(days=1)
    return out


def sql_dates(dates: set[str] | list[str]) -> str:
    """A SQL list of date-partition literals. Inlined rather than bound, because only literal
    predicates let the delta extension prune partitions; the values are checked first."""
    for d in dates:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", d):
            raise ValueError(f"not a partition date: {d!r}")
    return ", ".join(f"'{d}'" for d in sorted(dates)) or "NULL"


def pending(con: duckdb.DuckDBPyConnection, lake: Lake, landing: Path) -> list[LandingFile]:
    """Landing files not yet in bronze, in arrival order."""
    files = discover(landing)
    done = loaded_files(con, lake, {f.arrival_date for f in files})
    return [f for f in files if f.source_file not in done]
