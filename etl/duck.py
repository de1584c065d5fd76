"""DuckDB connections for the ETL, with the delta (and postgres) extensions loaded offline.

DuckDB would otherwise try to download extensions from the network on first use; the pinned
``duckdb-extension-*`` packages ship the binaries, so they are loaded from the package files and
auto-install/auto-load are switched off. Every connection runs with ``TimeZone='UTC'`` so that
``TIMESTAMPTZ`` values, hour truncation and date partitions all mean UTC.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path

import duckdb

from altaviz.errors import ConfigError

DUCKDB_VERSION = "v1.5.5"


def _extension_file(package: str, name: str) -> Path:
    import importlib

    module = importlib.import_module(package)
    path = Path(module.__file__ or "").parent / "extensions" / DUCKDB_VERSION / name
    if not path.exists():
        raise ConfigError(f"DuckDB extension file {path} is missing: reinstall {package}")
    return path


@cache
def _postgres_extension() -> Path:
    """The postgres extension copied to a name ending in ``postgres_scanner.duckdb_extension``.

    DuckDB derives the entry-point symbol from the file name, and the packaged file is named
    ``postgres.duckdb_extension`` while its entry point is ``postgres_scanner_init``.
    """
    src = _extension_file("duckdb_extension_postgres", "postgres.duckdb_extension")
    target_dir = Path(tempfile.gettempdir()) / f"altaviz-duckdb-ext-{DUCKDB_VERSION}"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "postgres_scanner.duckdb_extension"
    if not target.exists() or target.stat().st_size != src.stat().st_size:
        tmp = target_dir / f".postgres_scanner.{id(src)}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(target)
    return target


def connect(*, postgres: bool = False, memory_limit: str = "2GB",
            threads: int | None = None, temp_directory: Path | None = None
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection ready for ``delta_scan`` (and ``ATTACH ... TYPE postgres``).

    Args:
        postgres: also load the postgres extension (for pushing aggregates with binary COPY).
        memory_limit: DuckDB spills to ``temp_directory`` beyond this, which keeps the
            fleet-scale load under the 3 GB budget.
        threads: worker threads (default: DuckDB's choice, one per core).
        temp_directory: where DuckDB spills; default a folder under the system temp dir.
    """
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    })
    con.execute(f"LOAD '{_extension_file('duckdb_extension_delta', 'delta.duckdb_extension')}'")
    if postgres:
        con.execute(f"LOAD '{_postgres_extension()}'")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    # the ETL shows its own progress; DuckDB's bar would interleave with it on the terminal
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_directory is not None:
        temp_directory.mkdir(parents=True, exist_ok=True)
        con.execute("SET temp_directory = ?", [str(temp_directory)])
    return con
