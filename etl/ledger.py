"""Which landing files are new: the loaded-files ledger.

The ledger *is* the bronze table: every bronze row carries its ``source_file`` and the
``arrival_date`` partition it came from, and a file's rows land in one atomic Delta commit.
A separate ledger (a PostgreSQL table or a second Delta table) would be a second commit that a
crash can separate from the data, loading a file twice or never; reading the ledger from the
data itself cannot disagree with it. The lookup stays cheap because it is pruned to the
arrival-date partitions present in the landing folder and reads one dictionary-encoded column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from etl.lake import Lake

_ARRIVAL_DIR = re.compile(r"^arrival_date=(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class LandingFile:
    """One landing file: its absolute path, its path relative to the landing folder (the
    ledger key) and the arrival date of the folder it sits in."""

    path: Path
    source_file: str
    arrival_date: str


def discover(landing: Path) -> list[LandingFile]:
    """Every landing file in ``LANDING/arrival_date=YYYY-MM-DD/*.parquet``, oldest first.

    File names start with a sortable arrival timestamp, so name order is arrival order.
    Files elsewhere in the folder do not follow the contract and are ignored.
    """
    if not landing.is_dir():
        return []
    # absolute, not resolved: a landing folder of symlinks keeps its own relative paths
    landing = landing.absolute()
    found: list[LandingFile] = []
    for folder in landing.iterdir():
        match = _ARRIVAL_DIR.match(folder.name)
        if not match or not folder.is_dir():
            continue
        for path in folder.glob("*.parquet"):
            found.append(LandingFile(path, f"{folder.name}/{path.name}",
                                     match.group(1)))
    found.sort(key=lambda f: (f.arrival_date, f.path.name))
    return found


def loaded_files(con: duckdb.DuckDBPyConnection, lake: Lake,
                 arrival_dates: set[str]) -> set[str]:
    """The ``source_file`` keys already in bronze for the given arrival dates."""
    if not arrival_dates:
        return set()
    rows = con.execute(
        f"SELECT DISTINCT source_file FROM delta_scan('{lake.uri('bronze')}') "
        f"WHERE arrival_date IN ({sql_dates(arrival_dates)})"
    ).fetchall()
    return {r[0] for r in rows}


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
