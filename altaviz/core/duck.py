"""DuckDB connections for the ETL, with the delta (and postgres) extensions loaded offline.

DuckDB would otherwise try to download extensions from the network on first use; the pinned
``duckdb-extension-*`` packages ship the binaries, so they are loaded from the package files and
auto-install/auto-load are switched off. Every connection runs with ``TimeZone='UTC'`` so that
``TIMESTAMPTZ`` values, hour truncation and date partitions all mean UTC.

Integrity of the extension files: DuckDB's own signature check re-hashes the whole file on
every ``LOAD`` (the delta and postgres binaries are tens of MB each), paid again by every
pipeline stage's connection: a noticeable share of the hourly run (bench/bench_etl.py, hour
phase). Instead, each file is checked once per process against the SHA-256 that pip recorded
when it installed the pinned wheel (``RECORD``), and the connection is opened with
``allow_unsigned_extensions`` to load exactly those verified paths, nothing else: no SQL from
outside ever reaches these connections. Where no recorded hash exists (an installer that writes
none), DuckDB's signature check stays on. The renamed copy of the postgres extension lives in a
folder only this user can write and is itself checked against the wheel's hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import tempfile
from functools import cache
from pathlib import Path

import duckdb
import pyarrow as pa

from altaviz.core.errors import ConfigError

DUCKDB_VERSION = "v1.5.5"


def _extension_file(package: str, name: str) -> Path:
    import importlib

    module = importlib.import_module(package)
    path = Path(module.__file__ or "").parent / "extensions" / DUCKDB_VERSION / name
    if not path.exists():
        raise ConfigError(f"DuckDB extension file {path} is missing: reinstall {package}")
    return path


def _recorded_sha256(package: str, name: str) -> str | None:
    """The urlsafe-base64 SHA-256 pip recorded for the extension file (None: not recorded)."""
    import importlib.metadata

    try:
        files = importlib.metadata.distribution(package.replace("_", "-")).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    suffix = f"extensions/{DUCKDB_VERSION}/{name}"
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix) and f.hash and f.hash.mode == "sha256":
            return str(f.hash.value)
    return None


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check(path: Path, expected: str, package: str) -> None:
    if _sha256(path) != expected:
        raise ConfigError(f"DuckDB extension file {path} does not match the SHA-256 recorded "
                          f"when {package} was installed: reinstall {package}")


@cache
def _delta_extension() -> tuple[Path, bool]:
    """The delta extension and whether it was verified against the wheel's hash."""
    package, name = "duckdb_extension_delta", "delta.duckdb_extension"
    path = _extension_file(package, name)
    expected = _recorded_sha256(package, name)
    if expected is not None:
        _check(path, expected, package)
    return path, expected is not None


def _private_dir() -> Path:
    """A folder under the temp dir that only this user can write (checked, not assumed)."""
    target = Path(tempfile.gettempdir()) / f"altaviz-duckdb-ext-{DUCKDB_VERSION}-{os.getuid()}"
    target.mkdir(mode=0o700, exist_ok=True)
    st = target.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(f"{target} must be a folder owned by this user and writable by no "
                          f"one else (it holds a DuckDB extension that is loaded as code)")
    return target


@cache
def _postgres_extension() -> tuple[Path, bool]:
    """The postgres extension copied to a name ending in ``postgres_scanner.duckdb_extension``,
    and whether the copy was verified against the wheel's hash.

    DuckDB derives the entry-point symbol from the file name, and the packaged file is named
    ``postgres.duckdb_extension`` while its entry point is ``postgres_scanner_init``.
    """
    package, name = "duckdb_extension_postgres", "postgres.duckdb_extension"
    src = _extension_file(package, name)
    target_dir = _private_dir()
    target = target_dir / "postgres_scanner.duckdb_extension"
    expected = _recorded_sha256(package, name)
    if (not target.exists() or target.stat().st_size != src.stat().st_size
            or (expected is not None and _sha256(target) != expected)):
        tmp = target_dir / f".postgres_scanner.{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(target)
        if expected is not None:
            _check(target, expected, package)
    return target, expected is not None


def connect(*, postgres: bool = False, memory_limit: str = "2GB",
            threads: int | None = None, temp_directory: Path | None = None
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection ready for ``delta_scan`` (and ``ATTACH ... TYPE postgres``).

    Args:
        postgres: also load the postgres extension for ``ATTACH ... (TYPE postgres)`` (the
            rules benchmark uses it; the ETL's COPY is encoded by :mod:`etl.pgcopy`).
        memory_limit: DuckDB spills to ``temp_directory`` beyond this, which keeps the
            fleet-scale load under the 3 GB budget.
        threads: worker threads (default: DuckDB's choice, one per core).
        temp_directory: where DuckDB spills; default a folder under the system temp dir.
    """
    files = [_delta_extension(), *([_postgres_extension()] if postgres else [])]
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        # every file below was checked against its wheel's hash (see the module docstring)
        "allow_unsigned_extensions": all(verified for _, verified in files),
    })
    for path, _ in files:
        con.execute(f"LOAD '{path}'")
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


def table_from_arrow(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table, *,
                     temp: bool = True) -> None:
    """Create (or replace) DuckDB table ``name`` holding ``data``. ``temp=False`` for a table
    other cursors of the same instance must see (temp tables are per connection)."""
    con.register("_arrow_source", data)
    try:
        con.execute(f"CREATE OR REPLACE {'TEMP ' if temp else ''}TABLE {name} AS "
                    "SELECT * FROM _arrow_source")
    finally:
        con.unregister("_arrow_source")
