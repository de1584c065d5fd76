"""The Delta tables of the lake: paths, explicit schemas, batch bookkeeping and the writer lock.

Layout under ``settings.lake_path``::

    bronze/       raw landing rows, append-only, partitioned by arrival_date
    quarantine/   rejected rows with a reason, partitioned by arrival_date
    silver/       validated readings with late/outlier flags, partitioned by (reading) date
    gold/         hourly partials and rolling-window features, partitioned by (hour) date
    _hot/         the last 48 hours of gold's partials, wide: a cache for the hourly run (etl.hot)
    _handoff/     a bulk load's hourly partials, from silver to gold (etl.handoff); transient
    _locks/       the writer lock (one writer per table: the ETL holds it for a whole run)

Every table records, through delta-rs ``app_transactions``, the last *bronze batch id* it has
incorporated (app id ``altaviz.<table>``). The id is written in the same atomic commit as the
data, so after a crash each stage knows exactly which batches it still owes, and a retried
commit of a batch that already landed is recognised and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from filelock import FileLock, Timeout

from altaviz.core.errors import TransientError
from altaviz.core.telemetry import CHANNELS

TS = pa.timestamp("us", tz="UTC")
CHANNEL_FIELDS = [pa.field(c.name, pa.float64()) for c in CHANNELS]

#: Table properties: checkpoint every 10 commits (hourly appends make long logs) and keep
#: deleted files for 7 days so readers of older versions and time travel keep working.
TABLE_CONFIG = {
    "delta.checkpointInterval": "10",
    "delta.deletedFileRetentionDuration": "interval 7 days",
}

BRONZE_SCHEMA = pa.schema([
    pa.field("compressor_id", pa.string()),
    pa.field("ts", TS),
    pa.field("arrived_at", TS),
    *CHANNEL_FIELDS,
    # Text files only: {"column": "raw text"} of values that did not parse as numbers, so the
    # audit trail keeps what the gateway sent while the channel column stays typed.
    pa.field("invalid_values", pa.string()),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("batch_id", pa.int64(), nullable=False),
    pa.field("loaded_at", TS, nullable=False),
    pa.field("arrival_date", pa.string(), nullable=False),
])

QUARANTINE_SCHEMA = pa.schema([
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("org_id", pa.string()),
    pa.field("compressor_id", pa.string()),
    pa.field("ts", TS),
    pa.field("arrived_at", TS),
    *CHANNEL_FIELDS,
    pa.field("invalid_values", pa.string()),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("batch_id", pa.int64(), nullable=False),
    pa.field("arrival_date", pa.string(), nullable=False),
])

SILVER_SCHEMA = pa.schema([
    pa.field("org_id", pa.string(), nullable=False),
    pa.field("compressor_id", pa.string(), nullable=False),
    pa.field("ts", TS, nullable=False),
    pa.field("arrived_at", TS, nullable=False),
    *CHANNEL_FIELDS,
    pa.field("late", pa.bool_(), nullable=False),
    pa.field("outlier_metrics", pa.list_(pa.string())),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("batch_id", pa.int64(), nullable=False),
    pa.field("date", pa.string(), nullable=False),
])

GOLD_SCHEMA = pa.schema([
    pa.field("org_id", pa.string(), nullable=False),
    pa.field("compressor_id", pa.string(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("hour", TS, nullable=False),
    # hourly partials: windows are combined from these, never from raw rows
    pa.field("n", pa.int64(), nullable=False),
    pa.field("sum", pa.float64()),
    pa.field("sumsq", pa.float64()),
    pa.field("min", pa.float64()),
    pa.field("max", pa.float64()),
    pa.field("outliers", pa.int64(), nullable=False),
    pa.field("late", pa.int64(), nullable=False),
    # features
    pa.field("mean", pa.float64()),
    pa.field("stddev", pa.float64()),
    pa.field("mean_4h", pa.float64()),
    pa.field("min_4h", pa.float64()),
    pa.field("max_4h", pa.float64()),
    pa.field("stddev_4h", pa.float64()),
    pa.field("mean_24h", pa.float64()),
    pa.field("min_24h", pa.float64()),
    pa.field("max_24h", pa.float64()),
    pa.field("stddev_24h", pa.float64()),
    pa.field("rate_of_change", pa.float64()),
    pa.field("flags", pa.list_(pa.string())),
    pa.field("batch_id", pa.int64(), nullable=False),
    pa.field("date", pa.string(), nullable=False),
])

#: Row groups of 64 Ki rows: delta-rs keeps one open row group per partition being written,
#: and a first load writes 7-8 date partitions at once, so smaller row groups lower its peak
#: (bench/bench_etl.py, full phase); they also let readers skip more by the hour statistics.
WRITER_PROPERTIES = WriterProperties(max_row_group_size=64 * 1024)
#: Gold's floating-point columns are written without dictionary encoding and compressed with
#: LZ4: the Parquet writer first tries a dictionary for every column, and gold's partials and
#: features are mostly distinct values, on which the dictionaries cost write time; without
#: them LZ4 keeps the files as small as the defaults do, where snappy would make them much
#: larger (bench/bench_floor.py times gold's writes). Silver's channel values repeat, and
#: its defaults are kept: its dictionaries make its files much smaller at about the same speed.
GOLD_WRITER_PROPERTIES = WriterProperties(
    max_row_group_size=64 * 1024, compression="LZ4_RAW",
    column_properties={f.name: ColumnProperties(dictionary_enabled=False)
                       for f in GOLD_SCHEMA if f.type == pa.float64()})
#: Tables whose files are written with properties of their own, by appends and by
#: compaction (``altaviz etl maintain``); the others append with :data:`WRITER_PROPERTIES`
#: and compact with delta-rs's defaults.
TABLE_WRITER_PROPERTIES = {"gold": GOLD_WRITER_PROPERTIES}
#: Bytes per data file of an append. delta-rs keeps each partition's file open in memory until
#: it reaches this size (default ~100 MB), so with the default a week's first load into 7-8
#: date partitions would hold most of a gigabyte of Parquet buffers next to DuckDB's
#: (bench/bench_etl.py, full phase, reports gold's peak). An hourly append is far smaller
#: either way; ``altaviz etl maintain`` compacts the bulk load's smaller files.
TARGET_FILE_SIZE = 32 * 1024 * 1024

SCHEMAS = {"bronze": BRONZE_SCHEMA, "quarantine": QUARANTINE_SCHEMA,
           "silver": SILVER_SCHEMA, "gold": GOLD_SCHEMA}
PARTITIONS = {"bronze": ["arrival_date"], "quarantine": ["arrival_date"],
              "silver": ["date"], "gold": ["date"]}
#: Columns with per-file statistics in the Delta log, where delta-rs's default (the first 32
#: columns) misses ``batch_id``: silver and quarantine have 24 channel columns before it.
#: Without them every file of these tables would be "maybe in the batch", so the hourly run's
#: gold, quality and watermark queries would open every date partition of silver.
STATS_COLUMNS = {
    "silver": "org_id,compressor_id,ts,arrived_at,batch_id",
    "quarantine": "reason,org_id,compressor_id,ts,arrived_at,batch_id",
}
_STATS_KEY = "delta.dataSkippingStatsColumns"


@dataclass(frozen=True)
class Lake:
    """Paths of the lake's tables; create them with :meth:`ensure`."""

    root: Path

    def path(self, table: str) -> Path:
        """The folder of one table (``bronze``, ``quarantine``, ``silver`` or ``gold``)."""
        if table not in SCHEMAS:
            raise KeyError(table)
        return self.root / table

    def uri(self, table: str) -> str:
        """The table path as a string (for delta-rs and DuckDB's delta_scan)."""
        return str(self.path(table))

    def ensure(self) -> None:
        """Create any missing table with its explicit schema (an empty first commit); give
        a table of an older lake the statistics columns of :data:`STATS_COLUMNS` (files it
        writes from then on have them; older files are read as before)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for table, schema in SCHEMAS.items():
            config = dict(TABLE_CONFIG)
            if table in STATS_COLUMNS:
                config[_STATS_KEY] = STATS_COLUMNS[table]
            if not DeltaTable.is_deltatable(self.uri(table)):
                write_deltalake(self.uri(table), schema.empty_table(), mode="append",
                                partition_by=PARTITIONS[table], configuration=config)
            elif table in STATS_COLUMNS:
                dt = self.table(table)
                if dt.metadata().configuration.get(_STATS_KEY) != STATS_COLUMNS[table]:
                    dt.alter.set_table_properties({_STATS_KEY: STATS_COLUMNS[table]})

    def table(self, table: str) -> DeltaTable:
        """The delta-rs handle of a table (latest version)."""
        return DeltaTable(self.uri(table))

    def batch_mark(self, table: str) -> int:
        """The last bronze batch id this table has incorporated (0: none yet)."""
        version = self.table(table).transaction_version(app_id(table))
        return int(version or 0)

    def append(self, table: str, data: pa.Table | pa.RecordBatchReader, batch_id: int) -> None:
        """Append ``data`` and record ``batch_id`` in the same commit (see module docstring)."""
        write_deltalake(self.uri(table), data, mode="append", partition_by=PARTITIONS[table],
                        commit_properties=commit(table, batch_id),
                        writer_properties=TABLE_WRITER_PROPERTIES.get(table, WRITER_PROPERTIES),
                        target_file_size=TARGET_FILE_SIZE)

    def partitions_for_batches(self, table: str, after: int, upto: int) -> set[str]:
        """Partition values of the files holding batches ``after < batch_id <= upto``.

        Read from the Delta log's per-file statistics (no data is scanned), so the following
        query can name its partitions: DuckDB prunes Delta files by partition values.
        """
        return {value for value, _ in self.files_for_batches(table, after, upto)}

    def rows_for_batches(self, table: str, after: int, upto: int) -> int:
        """About how many rows batches ``after < batch_id <= upto`` hold, from the Delta log
        (no data is scanned): the rows of every file that may hold one of them, so a file
        compacted across batches counts whole. Sizes a stage before it runs."""
        return sum(rows for _, rows in self.files_for_batches(table, after, upto))

    def files_for_batches(self, table: str, after: int, upto: int) -> list[tuple[str, int]]:
        """(partition value, row count) of every file that may hold a batch in the range;
        files without statistics are kept: pruning must never lose rows."""
        if upto <= after:
            return []
        actions = pa.table(self.table(table).get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return []
        values = actions.column("partition." + PARTITIONS[table][0]).to_pylist()
        counts = [int(n or 0) for n in actions.column("num_records").to_pylist()]
        if "min.batch_id" not in actions.column_names:
            return list(zip(values, counts, strict=True))
        rows = zip(values, counts, actions.column("min.batch_id").to_pylist(),
                   actions.column("max.batch_id").to_pylist(), strict=True)
        return [(value, n) for value, n, lo, hi in rows
                if lo is None or hi is None or (hi > after and lo <= upto)]

    def max_value(self, table: str, column: str) -> Any:
        """The largest value of ``column`` in ``table`` (None: no rows), from the Delta log's
        per-file statistics; files without statistics are read."""
        actions = pa.table(self.table(table).get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return None
        stat = f"max.{column}"
        values = actions.column(stat).to_pylist() if stat in actions.column_names else [None]
        if any(v is None for v in values):
            data = self.table(table).to_pyarrow_dataset().to_table(columns=[column])
            return pc.max(data.column(column)).as_py()
        return max(values)

    @contextmanager
    def writer_lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Hold the lake's writer lock (local file systems give Delta no mutual exclusion).

        Raises:
            TransientError: another ETL run or maintenance holds the lock past ``timeout``.
        """
        lock_dir = self.root / "_locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_dir / "writer.lock"))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise TransientError(
                f"another ETL run or maintenance is writing to {self.root} "
                f"(lock {lock.lock_file} held for more than {timeout:.0f} s); retry later"
            ) from None
        try:
            yield
        finally:
            lock.release()


def app_id(table: str) -> str:
    """The app-transaction id a table records its bronze batch mark under."""
    return f"altaviz.{table}"


def commit(table: str, batch_id: int) -> CommitProperties:
    """Commit properties recording ``batch_id`` as the table's new batch mark."""
    return CommitProperties(app_transactions=[Transaction(app_id(table), batch_id)])


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data`` with the target table's exact column order and types.

    DuckDB hands back equivalent but not identical Arrow types (large strings, nullable
    flags); Delta wants the table's schema.
    """
    columns = []
    for field in schema:
        column = data.column(field.name)
        if column.type != field.type:
            column = column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def conform_reader(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    """A streaming :func:`conform`: DuckDB results reach Delta without being held in memory."""
    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            table = conform(pa.Table.from_batches([batch]), schema)
            yield from table.to_batches()
    return pa.RecordBatchReader.from_batches(schema, batches())
