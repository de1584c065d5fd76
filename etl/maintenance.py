"""Delta maintenance: compaction, checkpoints and vacuum of the lake's tables.

Hourly runs append small files and long logs. ``maintain`` compacts every table
(``optimize.compact``: small files rewritten into large ones; the data is unchanged),
writes a checkpoint so readers need not replay the log, and vacuums files that no version
within the retention still references (for real: delta-rs's ``vacuum`` is a dry run unless
told otherwise). It takes the lake's writer lock, so it never races an ETL run.
"""

from __future__ import annotations

from pathlib import Path

from deltalake.exceptions import DeltaError
from pydantic import BaseModel, ConfigDict

from altaviz.core.errors import InputError
from etl.lake import SCHEMAS, TABLE_WRITER_PROPERTIES, Lake


class TableMaintenance(BaseModel):
    """What maintenance did to one table."""

    model_config = ConfigDict(frozen=True)

    table: str
    files_removed: int
    files_added: int
    vacuumed: int
    version: int


def maintain(lake_path: Path, retention_hours: int = 168,
             enforce_retention: bool = True) -> list[TableMaintenance]:
    """Compact, checkpoint and vacuum every table of the lake.

    Args:
        lake_path: ``settings.lake_path``.
        retention_hours: files unreferenced for longer than this are deleted; readers (and
            time travel) older than this may fail. 168 h matches the tables'
            ``deletedFileRetentionDuration``.
        enforce_retention: refuse a retention below the table's configured minimum.
    """
    lake = Lake(lake_path)
    out: list[TableMaintenance] = []
    with lake.writer_lock():
        lake.ensure()
        for name in SCHEMAS:
            table = lake.table(name)
            metrics = table.optimize.compact(
                writer_properties=TABLE_WRITER_PROPERTIES.get(name))
            table = lake.table(name)
            table.create_checkpoint()
            try:
                removed = table.vacuum(retention_hours=retention_hours, dry_run=False,
                                       enforce_retention_duration=enforce_retention)
            except DeltaError as exc:
                raise InputError(f"vacuum of {name} refused: {exc}") from None
            out.append(TableMaintenance(
                table=name, files_removed=int(metrics.get("numFilesRemoved", 0)),
                files_added=int(metrics.get("numFilesAdded", 0)), vacuumed=len(removed),
                version=lake.table(name).version()))
    return out
