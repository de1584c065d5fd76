"""Bronze: new landing files appended, as sent, to the append-only bronze Delta table.

Each run's new files become one batch (id = the bronze table's batch mark + 1) written in a
single commit that also records the batch id (delta-rs ``app_transactions``). Because the
ledger is the bronze table itself (see :mod:`etl.ledger`), a crash before that commit loads
nothing and the retry picks up the same files; a crash after it finds them loaded.

Gateways send typed files (``LANDING_SCHEMA``, channels float64) or text files
(``TEXT_LANDING_SCHEMA``, channels as strings). Bronze keeps channels typed; a text value that
does not parse as a number is kept verbatim in ``invalid_values`` (a JSON object) so nothing
the gateway sent is lost; silver then treats that channel as missing for the reading.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from altaviz.core.telemetry import CHANNELS
from etl.lake import BRONZE_SCHEMA, Lake, conform
from etl.ledger import LandingFile, pending
from etl.models import BronzeResult

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]

_TARGET = {"compressor_id": "VARCHAR", "ts": "TIMESTAMPTZ", "arrived_at": "TIMESTAMPTZ",
           **{c.name: "DOUBLE" for c in CHANNELS}}


#: Characters DuckDB's file readers expand as a glob pattern; a path holding any of them is
#: handed to DuckDB as an Arrow table instead, so it names exactly one file.
_GLOB = re.compile(r"[*?\[\]{}]")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _signature(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    """Which contract columns a file has and whether each is text."""
    sig = []
    for name in _TARGET:
        if name in schema.names:
            t = schema.field(name).type
            kind = "text" if pa.types.is_string(t) or pa.types.is_large_string(t) else "typed"
            sig.append((name, kind))
    return tuple(sig)


def _incompatible(schema: pa.Schema) -> str | None:
    """Why a file's columns cannot map onto the bronze schema (None: they can).

    Checked per file before the batch is read, so one odd gateway file cannot fail the whole
    batch: timestamps must be timestamps, the id text, channels numbers or text.
    """
    for name, target in _TARGET.items():
        if name not in schema.names:
            continue
        t = schema.field(name).type
        text = pa.types.is_string(t) or pa.types.is_large_string(t)
        if target == "TIMESTAMPTZ" and not (text or pa.types.is_timestamp(t)
                                             or pa.types.is_null(t)):
            return f"column {name} is {t}, expected a timestamp (or text)"
        if target == "VARCHAR" and not (text or pa.types.is_integer(t) or pa.types.is_null(t)):
            return f"column {name} is {t}, expected text"
        if target == "DOUBLE" and not (text or pa.types.is_integer(t)
                                       or pa.types.is_floating(t) or pa.types.is_decimal(t)
                                       or pa.types.is_null(t)):
            return f"column {name} is {t}, expected a number (or text)"
    return None


def _select(source: str, signature: tuple[tuple[str, str], ...],
            landing_prefix: str, batch_id: int, loaded_at: datetime) -> str:
    """The SELECT that maps one group of same-shaped files onto the bronze schema.

    ``source`` is the FROM clause: a ``read_parquet`` of plain paths, or a registered Arrow
    table carrying the same ``filename`` and ``file_row_number`` columns (see :func:`_sources`).
    """
    present = dict(signature)
    columns: list[str] = []
    invalid: list[str] = []
    for name, target in _TARGET.items():
        kind = present.get(name)
        if kind is None:
            columns.append(f"NULL::{target} AS {_q(name)}")
        elif kind == "typed" or target == "VARCHAR":
            columns.append(f"{_q(name)}::{target} AS {_q(name)}")
        else:
            raw = f"nullif(trim({_q(name)}), '')"
            columns.append(f"TRY_CAST({raw} AS {target}) AS {_q(name)}")
            invalid.append(
                f"CASE WHEN {raw} IS NOT NULL AND TRY_CAST({raw} AS {target}) IS NULL "
                f"THEN '\"{name}\":' || to_json({_q(name)}) END")
    invalid_sql = (
        "CASE WHEN concat_ws(',', " + ", ".join(invalid) + ") <> '' THEN '{' || "
        "concat_ws(',', " + ", ".join(invalid) + ") || '}' END"
    ) if invalid else "NULL"
    prefix_len = len(landing_prefix) + 2  # 1-based, past the separating slash
    return f"""
        SELECT {", ".join(columns)},
               {invalid_sql} AS invalid_values,
               substr(filename, {prefix_len}) AS source_file,
               file_row_number AS source_row,
               {batch_id}::BIGINT AS batch_id,
               '{loaded_at.isoformat()}'::TIMESTAMPTZ AS loaded_at,
               regexp_extract(filename, 'arrival_date=([0-9-]+)', 1) AS arrival_date
        FROM {source}
    """


def _sources(con: duckdb.DuckDBPyConnection, files: list[LandingFile], tag: str,
             registered: list[str]) -> list[str]:
    """FROM clauses reading ``files``, each file exactly once, by its literal name.

    DuckDB expands ``*``, ``?``, ``[...]`` and ``{...}`` in a path even inside a list, with no
    escape: a landing file named ``*.parquet`` would read every file beside it. Those files are
    read with pyarrow and registered as Arrow tables (landing files are small); the rest keep
    the streaming ``read_parquet``. The names registered are added to ``registered``.
    """
    plain = [f for f in files if not _GLOB.search(str(f.path))]
    out = []
    if plain:
        paths = ", ".join("'" + str(f.path).replace("'", "''") + "'" for f in plain)
        out.append(f"read_parquet([{paths}], filename = true, file_row_number = true, "
                   "union_by_name = true)")
    for i, f in enumerate(f for f in files if _GLOB.search(str(f.path))):
        table = pq.read_table(f.path)
        table = table.append_column("filename", pa.array([str(f.path)] * table.num_rows,
                                                         pa.string()))
        table = table.append_column("file_row_number",
                                    pa.array(range(table.num_rows), pa.int64()))
        name = f"_landing_literal_{tag}_{i}"
        con.register(name, table)
        registered.append(name)
        out.append(_q(name))
    return out


def bronze_ingest(con: duckdb.DuckDBPyConnection, lake: Lake, landing: Path,
                  progress: Progress | None = None, max_files: int | None = None,
                  files: list[LandingFile] | None = None) -> BronzeResult:
    """Append every landing file not yet in bronze as one batch; idempotent.

    Args:
        con: a connection from :func:`altaviz.core.duck.connect`.
        lake: the lake (tables must exist: :meth:`Lake.ensure`).
        landing: the landing folder.
        progress: optional callback ``(stage, fraction)``.
        max_files: cap the batch size (the rest waits for the next run).
        files: the pending files when the caller has just listed them (:func:`pending`
            under the same writer lock), so the ledger is not read twice.

    Returns:
        The batch written, or an empty result when no file was new.
    """
    if files is None:
        files = pending(con, lake, landing)
    if max_files is not None:
        files = files[:max_files]
    skipped: list[str] = []
    groups: dict[tuple[tuple[str, str], ...], list[LandingFile]] = {}
    for f in files:
        try:
            with pq.ParquetFile(f.path) as parquet:
                schema = parquet.schema_arrow
                # Decode every page now (pyarrow, multi-threaded, cheap per file): a corrupt
                # page found later, inside the Delta write, would fail the whole batch.
                parquet.read()
        except (OSError, pa.ArrowException) as exc:
            log.warning("landing file %s is unreadable, left for inspection: %s", f.path, exc)
            skipped.append(f.source_file)
            continue
        reason = _incompatible(schema)
        if reason is not None:
            log.warning("landing file %s cannot be loaded, left for inspection: %s",
                        f.path, reason)
            skipped.append(f.source_file)
            continue
        groups.setdefault(_signature(schema), []).append(f)
    if not groups:
        return BronzeResult(skipped_files=skipped)
    batch_id = lake.batch_mark("bronze") + 1
    loaded_at = datetime.now(UTC)
    landing_prefix = str(landing.absolute())
    count = 0

    def write(groups: dict[tuple[tuple[str, str], ...], list[LandingFile]]) -> None:
        nonlocal count
        registered: list[str] = []
        query = " UNION ALL ".join(
            _select(source, sig, landing_prefix, batch_id, loaded_at)
            for n, (sig, g) in enumerate(groups.items())
            for source in _sources(con, g, str(n), registered))
        count = 0

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal count
            reader = con.execute(query).to_arrow_reader(250_000)
            for batch in reader:
                table = conform(pa.Table.from_batches([batch]), BRONZE_SCHEMA)
                count += table.num_rows
                if progress:
                    progress("bronze", 0.5)
                yield from table.to_batches()

        try:
            lake.append("bronze", pa.RecordBatchReader.from_batches(BRONZE_SCHEMA, batches()),
                        batch_id)
        finally:
            for name in registered:
                con.unregister(name)

    write(groups)
    total = sum(len(g) for g in groups.values())
    if progress:
        progress("bronze", 1.0)
    return BronzeResult(batch_id=batch_id, files=total, rows=count, skipped_files=skipped)
